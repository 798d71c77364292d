# shellcheck shell=bash
# Test certificates for the geo-replication tests (tests/integration/test-site-*.sh),
# made with the openssl CLI at test time (EC P-256, fast).
#
#   . "$(dirname "$0")/site_certs.sh"
#   site_certs_make DIR
#
# DIR then holds, each as NAME.crt + NAME.key (PEM):
#   ca                the CA both sites trust (ca.crt)
#   primary, dr       leaves signed by ca, CN and DNS SAN = the name, IP SAN
#                     127.0.0.1, serverAuth + clientAuth, valid from a day ago
#                     for 30 days
#   other-ca          a second CA nobody trusts
#   primary-otherca   "primary" signed by other-ca
#   primary-expired   "primary" signed by ca, valid 2020-01-01..2020-01-02
#                     (openssl ca -startdate/-enddate: openssl 3.0's req and
#                     x509 cannot back-date a certificate)
# Fails the test (functions.sh fail) when openssl does.

_sc_openssl() {
	local out
	out=$(openssl "$@" 2>&1) || fail "openssl $1 failed: $out"
}

# _sc_ext FILE NAME: the extensions of a leaf named NAME.
_sc_ext() {
	printf '%s\n' "basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=serverAuth,clientAuth" \
		"subjectAltName=DNS:$2,IP:127.0.0.1" >"$1"
}

# _sc_ca DIR NAME: a self-signed CA.
_sc_ca() {
	_sc_openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$1/$2.key" -out "$1/$2.crt" -subj "/CN=tessera test $2" -days 30 \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign"
}

# _sc_csr DIR TAG NAME: key + request for a leaf named NAME.
_sc_csr() {
	_sc_openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$1/$2.key" -out "$1/$2.csr" -subj "/CN=$3"
}

# site_certs_leaf DIR TAG NAME CA: TAG.crt named NAME, signed by CA, valid now.
site_certs_leaf() {
	local d=$1 tag=$2 name=$3 ca=$4
	_sc_csr "$d" "$tag" "$name"
	_sc_ext "$d/$tag.ext" "$name"
	# back-dated by nothing: valid from now for 30 days (the clocks are one machine's)
	_sc_openssl x509 -req -in "$d/$tag.csr" -CA "$d/$ca.crt" -CAkey "$d/$ca.key" \
		-CAcreateserial -days 30 -sha256 -extfile "$d/$tag.ext" -out "$d/$tag.crt"
}

# site_certs_expired DIR TAG NAME CA: TAG.crt valid only on 2020-01-01.
site_certs_expired() {
	local d=$1 tag=$2 name=$3 ca=$4 db=$1/ca-db
	mkdir -p "$db/new"
	: >"$db/index.txt"
	echo 1000 >"$db/serial"
	cat >"$db/ca.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
database = $db/index.txt
new_certs_dir = $db/new
serial = $db/serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
EOF
	_sc_csr "$d" "$tag" "$name"
	_sc_ext "$d/$tag.ext" "$name"
	_sc_openssl ca -batch -notext -config "$db/ca.cnf" -cert "$d/$ca.crt" -keyfile "$d/$ca.key" \
		-in "$d/$tag.csr" -out "$d/$tag.crt" -extfile "$d/$tag.ext" \
		-startdate 20200101000000Z -enddate 20200102000000Z
}

# site_certs_make DIR: every certificate listed above.
site_certs_make() {
	local d=$1 out
	command -v openssl >/dev/null || fail "openssl CLI not found"
	mkdir -p "$d"
	_sc_ca "$d" ca
	_sc_ca "$d" other-ca
	site_certs_leaf "$d" primary primary ca
	site_certs_leaf "$d" dr dr ca
	site_certs_leaf "$d" primary-otherca primary other-ca
	site_certs_expired "$d" primary-expired primary ca
	openssl verify -CAfile "$d/ca.crt" "$d/primary.crt" "$d/dr.crt" >/dev/null 2>&1 ||
		fail "site_certs: the leaves do not verify against ca.crt"
	openssl verify -CAfile "$d/ca.crt" "$d/primary-otherca.crt" >/dev/null 2>&1 &&
		fail "site_certs: primary-otherca verifies against ca.crt"
	out=$(openssl verify -CAfile "$d/ca.crt" "$d/primary-expired.crt" 2>&1)
	[[ "$out" == *expired* ]] || fail "site_certs: primary-expired is not expired: $out"
	return 0
}
