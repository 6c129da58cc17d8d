/* Aligned tables and JSON output for listings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

struct cli_table {
	size_t ncols;
	char **headers;
	size_t nrows, caprows;
	char ***rows;
};

static void cli_cells_free(char **cells, size_t n)
{
	if (cells == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(cells[i]);
	free(cells);
}

/* Copies n cells; a NULL cell becomes "-". */
static char **cli_cells_dup(size_t n, const char *const *cells)
{
	char **out = calloc(n, sizeof(*out));

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		out[i] = strdup(cells[i] != NULL ? cells[i] : "-");
		if (out[i] == NULL) {
			cli_cells_free(out, n);
			return NULL;
		}
	}
	return out;
}

struct cli_table *cli_table_new(size_t ncols, const char *const *headers)
{
	struct cli_table *t;

	if (ncols == 0 || (t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->ncols = ncols;
	if ((t->headers = cli_cells_dup(ncols, headers)) == NULL) {
		free(t);
		return NULL;
	}
	return t;
}

int cli_table_add(struct cli_table *t, const char *const *cells)
{
	char **row;

	if (t == NULL)
		return KY_ERR_INTERNAL;
	if (t->nrows == t->caprows) {
		size_t cap = t->caprows ? 2 * t->caprows : 8;
		char ***rows = realloc(t->rows, cap * sizeof(*rows));
		if (rows == NULL)
			return KY_ERR_NOMEM;
		t->rows = rows;
		t->caprows = cap;
	}
	if ((row = cli_cells_dup(t->ncols, cells)) == NULL)
		return KY_ERR_NOMEM;
	t->rows[t->nrows++] = row;
	return 0;
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t cli_text_width(const char *s)
{
	size_t w = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

static void cli_table_line(const struct cli_table *t, char *const *cells, const size_t *widths,
                           FILE *f)
{
	size_t last = t->ncols;

	/* no padding after the last non-empty cell: lines carry no trailing blanks */
	while (last > 1 && cells[last - 1][0] == '\0')
		last--;
	for (size_t c = 0; c < last; c++) {
		fputs(cells[c], f);
		if (c + 1 < last)
			fprintf(f, "%*s", (int)(widths[c] - cli_text_width(cells[c]) + 3), "");
	}
	fputc('\n', f);
}

void cli_table_print(struct cli_table *t, FILE *f)
{
	size_t *widths;

	if (t == NULL || (widths = calloc(t->ncols, sizeof(*widths))) == NULL)
		return;
	for (size_t c = 0; c < t->ncols; c++) {
		widths[c] = cli_text_width(t->headers[c]);
		for (size_t r = 0; r < t->nrows; r++) {
			size_t w = cli_text_width(t->rows[r][c]);
			if (w > widths[c])
				widths[c] = w;
		}
	}
	cli_table_line(t, t->headers, widths, f);
	for (size_t r = 0; r < t->nrows; r++)
		cli_table_line(t, t->rows[r], widths, f);
	free(widths);
}

void cli_table_free(struct cli_table *t)
{
	if (t == NULL)
		return;
	for (size_t r = 0; r < t->nrows; r++)
		cli_cells_free(t->rows[r], t->ncols);
	free(t->rows);
	cli_cells_free(t->headers, t->ncols);
	free(t);
}

void cli_print_json(json_t *j)
{
	char *s;

	if (j == NULL)
		return;
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (s != NULL) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
	json_decref(j);
}
