# A strict reader of the Prometheus text exposition format 0.0.4, for GET /metrics. POSIX awk.
# Prints one line per fault ("line N: what") and exits 1 when there is any:
#   every line is '# HELP name text', '# TYPE name type' or a sample 'name{labels} value'
#   (empty lines and other comments are allowed by the format and refused here: the unit
#   writes none); names and label names well formed, label values quoted with \\ \" \n
#   escapes only; a value is a number
#   HELP and TYPE at most once per family, TYPE before the family's first sample, and a
#   family's samples together; every sample belongs to a declared family
#   counters end in _total; a histogram has _bucket (with le), _sum and _count per label set,
#   its buckets in increasing le, cumulative (never decreasing), ending in le="+Inf", whose
#   count equals _count
#   no sample twice
function err(msg) {
	printf "line %d: %s\n", NR, msg
	bad = 1
}
function isnum(v) {
	return v ~ /^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$/ || v == "+Inf" ||
	    v == "-Inf" || v == "NaN"
}
# Splits a label set {a="x",b="y"} into lab[] / nlab; 0 when malformed.
function labels(s,    rest, k, v, c) {
	nlab = 0
	rest = s
	if (rest == "")
		return 1
	while (rest != "") {
		if (!match(rest, /^[a-zA-Z_][a-zA-Z0-9_]*="/))
			return 0
		k = substr(rest, 1, RLENGTH - 2)
		rest = substr(rest, RLENGTH + 1)
		v = ""
		for (;;) {
			if (rest == "")
				return 0
			c = substr(rest, 1, 1)
			if (c == "\"")
				break
			if (c == "\\") {
				c = substr(rest, 2, 1)
				if (c != "\\" && c != "\"" && c != "n")
					return 0
				v = v "\\" c
				rest = substr(rest, 3)
				continue
			}
			v = v c
			rest = substr(rest, 2)
		}
		rest = substr(rest, 2)
		nlab++
		lname[nlab] = k
		lval[nlab] = v
		if (rest != "") {
			if (substr(rest, 1, 1) != ",")
				return 0
			rest = substr(rest, 2)
		}
	}
	return 1
}
BEGIN {
	bad = 0
	cur = ""
}
/^# HELP / {
	n = $3
	if (n !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*$/)
		err("HELP of a malformed name '" n "'")
	if (n in help)
		err("a second HELP for " n)
	help[n] = 1
	next
}
/^# TYPE / {
	n = $3
	t = $4
	if (NF != 4)
		err("TYPE line with " NF " fields")
	if (t != "counter" && t != "gauge" && t != "histogram" && t != "summary" && t != "untyped")
		err("unknown type '" t "' for " n)
	if (n in type)
		err("a second TYPE for " n)
	if (n in seen)
		err("TYPE of " n " after its samples")
	if (t == "counter" && n !~ /_total$/)
		err("counter " n " does not end in _total")
	type[n] = t
	next
}
/^#/ || /^$/ {
	err("a line that is neither HELP, TYPE nor a sample: '" $0 "'")
	next
}
{
	line = $0
	if (!match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*/)) {
		err("a sample without a metric name: '" line "'")
		next
	}
	name = substr(line, 1, RLENGTH)
	rest = substr(line, RLENGTH + 1)
	lab = ""
	if (substr(rest, 1, 1) == "{") {
		i = index(rest, "} ")
		if (i == 0) {
			err("unclosed label set: '" line "'")
			next
		}
		lab = substr(rest, 2, i - 2)
		rest = substr(rest, i + 1)
	}
	if (substr(rest, 1, 1) != " ") {
		err("no space before the value: '" line "'")
		next
	}
	val = substr(rest, 2)
	if (!isnum(val))
		err("value '" val "' is not a number")
	if (!labels(lab)) {
		err("malformed labels '" lab "'")
		next
	}
	fam = name
	suffix = ""
	if (!(fam in type) && match(name, /_(bucket|sum|count)$/)) {
		fam = substr(name, 1, RSTART - 1)
		suffix = substr(name, RSTART + 1)
	}
	if (!(fam in type)) {
		err("sample of " name " without a TYPE")
		next
	}
	if (fam != cur) {
		if (fam in seen)
			err("samples of " fam " are not together")
		cur = fam
	}
	seen[fam] = 1
	if ((name SUBSEP lab) in sample)
		err("sample " name "{" lab "} twice")
	sample[name SUBSEP lab] = 1
	if (type[fam] != "histogram")
		next
	if (suffix == "") {
		err("histogram " fam " sample without _bucket, _sum or _count")
		next
	}
	# the label set without le names the series
	key = ""
	le = ""
	for (i = 1; i <= nlab; i++) {
		if (lname[i] == "le")
			le = lval[i]
		else
			key = key lname[i] "=" lval[i] ","
	}
	key = fam SUBSEP key
	if (suffix == "bucket") {
		if (le == "") {
			err("bucket of " fam " without le")
			next
		}
		if ((key in inf) && inf[key] != "")
			err("bucket after le=\"+Inf\" in " fam)
		if (le == "+Inf") {
			inf[key] = val
		} else {
			if (!isnum(le))
				err("le '" le "' is not a number")
			if ((key in lastle) && le + 0 <= lastle[key] + 0)
				err("buckets of " fam " not in increasing le")
			lastle[key] = le
		}
		if ((key in lastcnt) && val + 0 < lastcnt[key] + 0)
			err("buckets of " fam " not cumulative at le=" le)
		lastcnt[key] = val
		series[key] = 1
	} else if (suffix == "count") {
		count[key] = val
		if (!((key in inf) && inf[key] != ""))
			err("_count of " fam " before its le=\"+Inf\" bucket")
		else if (inf[key] + 0 != val + 0)
			err("_count of " fam " is " val ", its le=\"+Inf\" bucket " inf[key])
	} else {
		sum[key] = val
	}
}
END {
	for (k in series) {
		if (!(k in count))
			err("a histogram series without _count")
		if (!(k in sum))
			err("a histogram series without _sum")
	}
	exit bad
}
