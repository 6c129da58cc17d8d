# cms_splice BASE OUT WHAT N: rewrites the DER SignedData in BASE into OUT, with
#   certs N       N certificates: the first one's copies, each with another serial number
#   signers N     N made-up SignerInfos (distinct, SHA-512 / ECDSA, unsigned)
#   copies N      N exact copies of the first SignerInfo
#   digests N     N digest algorithms named (SHA-512 each time)
use strict;
use warnings;
my ($base, $out, $what, $n) = @ARGV;
open(my $fh, '<:raw', $base) or die "$base: $!";
my $d = do { local $/; <$fh> };
close($fh);
sub len_enc {
	my $n = shift;
	return chr($n) if $n < 128;
	my $s = '';
	while ($n) { $s = chr($n & 255) . $s; $n >>= 8; }
	return chr(0x80 | length($s)) . $s;
}
sub wrap { my ($tag, $c) = @_; return chr($tag) . len_enc(length($c)) . $c; }
# (tag, header length, content length) of the TLV at offset p of string s.
sub tlv {
	my ($s, $p) = @_;
	my $tag = ord(substr($s, $p, 1));
	my $l = ord(substr($s, $p + 1, 1));
	return ($tag, 2, $l) if $l < 128;
	my $k = $l & 127;
	my $n = 0;
	$n = ($n << 8) | ord(substr($s, $p + 2 + $_, 1)) for 0 .. $k - 1;
	return ($tag, 2 + $k, $n);
}
sub children {
	my $s = shift;
	my @c;
	my $p = 0;
	while ($p < length($s)) {
		my ($t, $h, $l) = tlv($s, $p);
		push @c, [$t, substr($s, $p, $h + $l), substr($s, $p + $h, $l)];
		$p += $h + $l;
	}
	return @c;
}
my ($ci) = children($d);
my ($oid, $a0) = children($ci->[2]);
my ($sd) = children($a0->[2]);
my @kids = children($sd->[2]);
my $body = '';
for my $k (@kids) {
	if ($k->[0] == 0xa0 && $what eq 'certs') {
		my ($cert) = children($k->[2]);
		my ($tbs, @rest) = children($cert->[2]);
		my ($ver, $serial, @tbsrest) = children($tbs->[2]);
		my $certs = '';
		for my $i (1 .. $n) {
			my $sn = wrap(0x02, "\x01" . pack('N', $i));
			my $t = wrap(0x30, $ver->[1] . $sn . join('', map { $_->[1] } @tbsrest));
			$certs .= wrap(0x30, $t . join('', map { $_->[1] } @rest));
		}
		$body .= wrap(0xa0, $certs);
	} elsif ($k->[0] == 0x31 && $k == $kids[1] && $what eq 'digests') {
		$body .= wrap(0x31, wrap(0x30, wrap(0x06, "\x60\x86\x48\x01\x65\x03\x04\x02\x03")) x $n);
	} elsif ($k->[0] == 0x31 && $k == $kids[-1] && $what eq 'copies') {
		my ($si) = children($k->[2]);
		$body .= wrap(0x31, $si->[1] x $n);
	} elsif ($k->[0] == 0x31 && $k == $kids[-1] && $what eq 'signers') {
		my $sha512 = wrap(0x30, wrap(0x06, "\x60\x86\x48\x01\x65\x03\x04\x02\x03"));
		my $ecdsa = wrap(0x30, wrap(0x06, "\x2a\x86\x48\xce\x3d\x04\x03\x04"));
		my $sis = '';
		for my $i (1 .. $n) {
			$sis .= wrap(0x30, wrap(0x02, "\x03") . wrap(0x80, "\x11" x 32) . $sha512 .
			       $ecdsa . wrap(0x04, pack('N', $i)));
		}
		$body .= wrap(0x31, $sis);
	} else {
		$body .= $k->[1];
	}
}
open($fh, '>:raw', $out) or die "$out: $!";
print $fh wrap(0x30, $oid->[1] . wrap(0xa0, wrap(0x30, $body)));
close($fh);
