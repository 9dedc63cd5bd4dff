#!/bin/sh
# scripts/gen-test-certs.sh OUTDIR: test certificates for the TLS unit and end-to-end tests.
#
# Uses the openssl command-line tool as a separate process (outpostd itself never links or
# loads OpenSSL 3; see shared STACK.md). Everything is made fresh on each run, valid from now
# for 30 days; private keys are unencrypted PEM. Files written into OUTDIR:
#
#   ca.pem ca.key               the test root CA (ECDSA P-256), "Outpost Test CA"
#   int.pem int.key             an intermediate CA signed by ca
#   other-ca.pem other-ca.key   an unrelated root CA (for "unknown CA" tests)
#   default-rsa.pem .key        RSA-2048 leaf, CN default.test, SAN default.test, localhost,
#                               IP 127.0.0.1; signed by ca
#   default-ec.pem .key         ECDSA P-256 leaf with the same names; signed by ca
#   a.pem a.key                 ECDSA leaf, CN/SAN a.example; signed by ca
#   wild.pem wild.key           RSA-2048 leaf, CN/SAN *.wild.example; signed by ca
#   ip.pem ip.key               ECDSA leaf, CN 127.0.0.1, SAN IP 127.0.0.1 only; signed by ca
#   chain.pem chain.key         ECDSA leaf for chain.example signed by int, followed by
#                               int.pem (a full chain, leaf first, as tls_certificate wants)
#   ocsp.der                    a DER OCSP response ("good") for default-rsa.pem, signed by ca
#
# Exits non-zero (with openssl's message on stderr) if any step fails.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out=$1
mkdir -p "$out"
cd "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

days=30

# newkey NAME rsa|ec: write NAME.key
newkey() {
    if [ "$2" = rsa ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key" 2>/dev/null
    else
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"
    fi
}

# root NAME CN: a self-signed CA
root() {
    newkey "$1" ec
    openssl req -new -x509 -key "$1.key" -out "$1.pem" -days $days -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
}

# sign NAME ISSUER rsa|ec CN SAN EXT: NAME.pem signed by ISSUER.pem/ISSUER.key
sign() {
    newkey "$1" "$3"
    openssl req -new -key "$1.key" -out "$tmp/$1.csr" -subj "/CN=$4"
    printf '%s\n' "$6" >"$tmp/$1.ext"
    [ -n "$5" ] && printf 'subjectAltName=%s\n' "$5" >>"$tmp/$1.ext"
    openssl x509 -req -in "$tmp/$1.csr" -CA "$2.pem" -CAkey "$2.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days $days -extfile "$tmp/$1.ext" \
        -out "$1.pem" 2>/dev/null
}

leaf_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth'
ca_ext='basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign'

root ca "Outpost Test CA"
root other-ca "Outpost Other Test CA"
sign int ca ec "Outpost Test Intermediate" "" "$ca_ext"
sign default-rsa ca rsa default.test "DNS:default.test,DNS:localhost,IP:127.0.0.1" "$leaf_ext"
sign default-ec ca ec default.test "DNS:default.test,DNS:localhost,IP:127.0.0.1" "$leaf_ext"
sign a ca ec a.example "DNS:a.example" "$leaf_ext"
sign wild ca rsa "*.wild.example" "DNS:*.wild.example" "$leaf_ext"
sign ip ca ec 127.0.0.1 "IP:127.0.0.1" "$leaf_ext"
sign chain int ec chain.example "DNS:chain.example" "$leaf_ext"
cat int.pem >>chain.pem

# OCSP: a one-line index (status V, expiry, no revocation date, serial, file, subject), then a
# request for default-rsa.pem answered by the CA itself.
serial=$(openssl x509 -in default-rsa.pem -noout -serial | sed 's/^serial=//')
printf 'V\t%s\t\t%s\tunknown\t/CN=default.test\n' "$(date -u -d "+$days days" +%y%m%d%H%M%SZ)" \
    "$serial" >"$tmp/index.txt"
openssl ocsp -issuer ca.pem -cert default-rsa.pem -no_nonce -reqout "$tmp/req.der" >/dev/null
openssl ocsp -index "$tmp/index.txt" -rsigner ca.pem -rkey ca.key -CA ca.pem -ndays 7 \
    -reqin "$tmp/req.der" -respout ocsp.der >/dev/null
[ -s ocsp.der ]
