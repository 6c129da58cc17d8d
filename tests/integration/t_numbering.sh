#!/usr/bin/env bash
# Signature keys and key parts keep their numbers: copying (cp -p or not), touching or
# restoring a file never renumbers it, so '--sigkeys 1' always means the same person. A
# workspace from before the order files is numbered by file times once, then kept.
. "$(dirname "$0")/helpers.sh"
setup

S=$KYOK_TKE_FILES/sigkeys
nums() { "$KYOK" tke sigkeys --output json | jq -r '[.sigkeys[] | "\(.number)=\(.name)"] | join(" ")'; }
parts() { "$KYOK" tke mks --output json | jq -r '[.keyparts[] | "\(.number)=\(.description)"] | join(" ")'; }
file_of() { "$KYOK" tke sigkeys --output json | jq -r ".sigkeys[] | select(.name == \"$1\") | .file"; }

for who in alice bob carol; do
	"$KYOK" tke sigkey-add --name "$who" --password-file "$(newpw "$who")" >/dev/null
done
"$KYOK" tke mk-add --random --description one --password-file "$(newpw p1)" >/dev/null
"$KYOK" tke mk-add --random --description two --password-file "$(newpw p2)" >/dev/null
expect_eq "three signature keys, in order of creation" "$(nums)" "1=alice 2=bob 3=carol"
expect_eq "two key parts" "$(parts)" "1=one 2=two"

A=$(file_of alice)
B=$(file_of bob)
C=$(file_of carol)
mkdir -p "$T_DIR/backup"
cp -p "$A" "$B" "$C" "$T_DIR/backup/"

touch -d '2031-01-01' "$A"
touch -d '2001-01-01' "$C"
expect_eq "touching files (alice newest, carol oldest) keeps the numbers" "$(nums)" "1=alice 2=bob 3=carol"
cp "$T_DIR/backup/$(basename "$B")" "$B"
expect_eq "copying a file over itself from a backup (new time) keeps the numbers" "$(nums)" "1=alice 2=bob 3=carol"
rm "$A"
expect_eq "alice's file gone: the others move up" "$(nums)" "1=bob 2=carol"
cp -p "$T_DIR/backup/$(basename "$A")" "$A"
expect_eq "alice's file restored with cp -p: her number back" "$(nums)" "1=alice 2=bob 3=carol"
rm "$A"
cp "$T_DIR/backup/$(basename "$A")" "$A"
expect_eq "... and restored with plain cp (a new file time)" "$(nums)" "1=alice 2=bob 3=carol"
"$KYOK" tke sigkey-sel --sigkeys 1 >/dev/null
expect_eq "--sigkeys 1 selects alice" \
	"$("$KYOK" tke sigkeys --output json | jq -r '[.sigkeys[] | select(.selected) | .name] | join(",")')" alice

"$KYOK" tke sigkey-add --name dave --password-file "$(newpw dave)" >/dev/null
touch -d '2000-01-01' "$(file_of dave)"
expect_eq "a new key comes last, whatever its file time" "$(nums)" "1=alice 2=bob 3=carol 4=dave"
cp -p "$B" "$S/bob-copy.sigkey"
expect_eq "a copy under a new name is a new file: last" "$(nums)" "1=alice 2=bob 3=carol 4=dave 5=bob"
rm "$S/bob-copy.sigkey"

P1=$("$KYOK" tke mks --output json | jq -r '.keyparts[] | select(.number == 1) | .file')
touch -d '2031-01-01' "$P1"
expect_eq "touching key part 1 keeps the numbers" "$(parts)" "1=one 2=two"

# A workspace of an older kyok: no order file; numbered by file times once, then kept.
D=$(file_of dave)
rm "$KYOK_TKE_FILES/sigkeys.order"
touch -d '2001-01-01' "$C"
touch -d '2002-01-01' "$A"
touch -d '2003-01-01' "$D"
touch -d '2004-01-01' "$B"
expect_eq "an older workspace is numbered by file times, as before" "$(nums)" "1=carol 2=alice 3=dave 4=bob"
expect_eq "... once: the order is written down" "$(grep -vc '^#' "$KYOK_TKE_FILES/sigkeys.order")" 4
touch "$C"
expect_eq "... and kept from then on" "$(nums)" "1=carol 2=alice 3=dave 4=bob"

# A damaged order file is refused, not used to renumber.
printf 'not a file name\n' >>"$KYOK_TKE_FILES/sigkeys.order"
expect_fail "a damaged order file is refused" "sigkeys.order.*line 6 is not a '\*\.sigkey' file name" \
	"$KYOK" tke sigkeys

finish
