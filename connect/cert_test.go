package connect

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Keys other than P-256 are slow to make (RSA) or rarely needed: make each
// once for the whole test binary.
var (
	testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err) // only in tests: a broken crypto/rand
		}
		return k
	})
	testP384Key = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// selfSigned returns a self-signed CA certificate for key, in DER.
func selfSigned(t testing.TB, key crypto.Signer, cn string) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pemOf(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	if k.Curve != elliptic.P256() {
		t.Fatalf("GenerateKey() curve %s, want P-256", k.Curve.Params().Name)
	}
	if err := ValidateSigningKey(k); err != nil {
		t.Errorf("ValidateSigningKey(GenerateKey()) = %v", err)
	}
	if mustKey(t).Equal(k) {
		t.Error("GenerateKey() returned the same key twice")
	}
}

func TestEncodeKey_ParseSigner(t *testing.T) {
	t.Parallel()
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := mustKey(t)
	pkcs8EC, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		key      crypto.Signer
		pem      string // what to parse; EncodeKey(key) when empty
		wantType string // PEM type of EncodeKey(key)
	}{
		{"EC P-256", ecKey, "", "EC PRIVATE KEY"},
		{"EC P-384", testP384Key(), "", "EC PRIVATE KEY"},
		{"Ed25519 as PKCS #8", edKey, "", "PRIVATE KEY"},
		{"RSA as PKCS #8", testRSAKey(), "", "PRIVATE KEY"},
		{"RSA as PKCS #1", testRSAKey(), pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(testRSAKey())), "PRIVATE KEY"},
		{"EC as PKCS #8", ecKey, pemOf("PRIVATE KEY", pkcs8EC), "EC PRIVATE KEY"},
		{"surrounding space", ecKey, "\n\n  " + pemOf("PRIVATE KEY", pkcs8EC) + "\n\t", "EC PRIVATE KEY"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			enc, err := EncodeKey(test.key)
			if err != nil {
				t.Fatalf("EncodeKey: %v", err)
			}
			if block, _ := pem.Decode([]byte(enc)); block == nil || block.Type != test.wantType {
				t.Errorf("EncodeKey gave %q, want a %s block", enc, test.wantType)
			}
			in := test.pem
			if in == "" {
				in = enc
			}
			got, err := ParseSigner(in)
			if err != nil {
				t.Fatalf("ParseSigner: %v", err)
			}
			type equaler interface{ Equal(crypto.PrivateKey) bool }
			if !got.(equaler).Equal(test.key) {
				t.Errorf("ParseSigner gave another key (%T)", got)
			}
		})
	}
}

func TestParseSigner_errors(t *testing.T) {
	t.Parallel()
	xKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := x509.MarshalPKCS8PrivateKey(xKey)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pemOf("CERTIFICATE", selfSigned(t, mustKey(t), "root"))
	tests := []struct {
		name      string
		in        string
		wantNoPEM bool
	}{
		{"empty", "", true},
		{"text", "not a key", true},
		{"truncated", strings.Split(pemOf("EC PRIVATE KEY", []byte("xx")), "\n")[0], true},
		{"certificate", certPEM, false},
		{"encrypted", pemOf("ENCRYPTED PRIVATE KEY", []byte("xx")), false},
		{"public key", pemOf("PUBLIC KEY", []byte("xx")), false},
		{"bad EC", pemOf("EC PRIVATE KEY", []byte("xx")), false},
		{"bad RSA", pemOf("RSA PRIVATE KEY", []byte("xx")), false},
		{"bad PKCS #8", pemOf("PRIVATE KEY", []byte("xx")), false},
		{"X25519 cannot sign", pemOf("PRIVATE KEY", x25519), false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSigner(test.in)
			if err == nil {
				t.Fatalf("ParseSigner(%q) got %T, want an error", test.in, got)
			}
			if errors.Is(err, ErrNotPEM) != test.wantNoPEM {
				t.Errorf("ParseSigner(%q) got %v, want errors.Is(ErrNotPEM) %v", test.in, err, test.wantNoPEM)
			}
		})
	}
}

// otherSigner is a crypto.Signer with any public key, to reach the cases a
// real key cannot.
type otherSigner struct{ pub crypto.PublicKey }

func (s otherSigner) Public() crypto.PublicKey { return s.pub }
func (s otherSigner) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("cannot sign")
}

func TestValidateSigningKey(t *testing.T) {
	t.Parallel()
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  crypto.PublicKey
		ok   bool
	}{
		{"P-256", mustKey(t).Public(), true},
		{"P-384", testP384Key().Public(), false},
		{"RSA", testRSAKey().Public(), false},
		{"Ed25519", edPub, false},
		{"none", nil, false},
		{"nil ECDSA key", (*ecdsa.PublicKey)(nil), false},
		{"ECDSA key without a curve", &ecdsa.PublicKey{}, false},
	}
	for _, test := range tests {
		err := ValidateSigningKey(otherSigner{test.pub})
		if test.ok != (err == nil) {
			t.Errorf("ValidateSigningKey(%s) got %v, want ok=%v", test.name, err, test.ok)
		}
	}
}

func TestParseCerts(t *testing.T) {
	t.Parallel()
	a := selfSigned(t, mustKey(t), "a")
	b := selfSigned(t, mustKey(t), "b")
	pa, pb := EncodeCert(a), EncodeCert(b)
	if block, rest := pem.Decode([]byte(pa)); block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, a) || len(rest) != 0 {
		t.Fatalf("EncodeCert gave %q", pa)
	}
	tests := []struct {
		name      string
		in        string
		want      []string // common names
		wantNoPEM bool
	}{
		{"one", pa, []string{"a"}, false},
		{"two in order", pa + pb, []string{"a", "b"}, false},
		{"reverse order", pb + pa, []string{"b", "a"}, false},
		{"space around", "\n  " + pa + "\n\n" + pb + "  \n", []string{"a", "b"}, false},
		{"text before", "root certificate:\n" + pa, []string{"a"}, false},
		{"empty", "", nil, true},
		{"text", "hello", nil, true},
		{"key block", pemOf("EC PRIVATE KEY", []byte("x")), nil, false},
		{"key after certificate", pa + pemOf("EC PRIVATE KEY", []byte("x")), nil, false},
		{"bad DER", pemOf("CERTIFICATE", []byte("not DER")), nil, false},
		{"bad second", pa + pemOf("CERTIFICATE", a[:len(a)/2]), nil, false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseCerts(test.in)
			if test.want == nil {
				if err == nil {
					t.Fatalf("ParseCerts(%q) got %d certificates, want an error", test.in, len(got))
				}
				if errors.Is(err, ErrNotPEM) != test.wantNoPEM {
					t.Errorf("ParseCerts(%q) got %v, want errors.Is(ErrNotPEM) %v", test.in, err, test.wantNoPEM)
				}
				if _, err := ParseCert(test.in); err == nil {
					t.Errorf("ParseCert(%q) succeeded where ParseCerts fails", test.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCerts: %v", err)
			}
			var names []string
			for _, c := range got {
				names = append(names, c.Subject.CommonName)
			}
			if strings.Join(names, ",") != strings.Join(test.want, ",") {
				t.Errorf("ParseCerts got %v, want %v", names, test.want)
			}
			first, err := ParseCert(test.in)
			if err != nil || first.Subject.CommonName != test.want[0] {
				t.Errorf("ParseCert got %v, %v, want %s", first, err, test.want[0])
			}
		})
	}
}

func TestCreateCSR_ParseCSR(t *testing.T) {
	t.Parallel()
	key := mustKey(t)
	id := NewServiceID("abc.trellis", "dc1", "web")
	s, err := CreateCSR(id, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() {
		t.Errorf("CSR URIs %v, want exactly %s", csr.URIs, id)
	}
	if csr.Subject.CommonName != "web" {
		t.Errorf("CSR common name %q, want web", csr.Subject.CommonName)
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
		t.Errorf("CSR has other SANs: %v %v %v", csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
	}
	if !key.PublicKey.Equal(csr.PublicKey) {
		t.Error("CSR public key is not the key's")
	}

	if _, err := CreateCSR(ServiceID{TrustDomain: "abc.trellis"}, key); err == nil {
		t.Error("CreateCSR of an invalid identity succeeded")
	}

	block, _ := pem.Decode([]byte(s))
	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-1] ^= 0xff // inside the signature
	tests := []struct {
		name      string
		in        string
		wantNoPEM bool
	}{
		{"empty", "", true},
		{"text", "csr", true},
		{"certificate", pemOf("CERTIFICATE", selfSigned(t, key, "a")), false},
		{"bad DER", pemOf("CERTIFICATE REQUEST", []byte("xx")), false},
		{"bad signature", pemOf("CERTIFICATE REQUEST", tampered), false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseCSR(test.in)
			if err == nil {
				t.Fatalf("ParseCSR(%q) succeeded, want an error", test.in)
			}
			if errors.Is(err, ErrNotPEM) != test.wantNoPEM {
				t.Errorf("ParseCSR(%q) got %v, want errors.Is(ErrNotPEM) %v", test.in, err, test.wantNoPEM)
			}
		})
	}
}

func TestKeyID(t *testing.T) {
	t.Parallel()
	k1, k2 := mustKey(t), mustKey(t)
	id1, err := KeyID(k1.Public())
	if err != nil {
		t.Fatal(err)
	}
	again, _ := KeyID(&k1.PublicKey)
	id2, _ := KeyID(k2.Public())
	if len(id1) != 20 || !bytes.Equal(id1, again) || bytes.Equal(id1, id2) {
		t.Errorf("KeyID: %x, again %x, other key %x: want 20 bytes, stable, distinct", id1, again, id2)
	}
	if _, err := KeyID(struct{}{}); err == nil {
		t.Error("KeyID of a non-key succeeded")
	}
}

func TestHexString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []byte
		want string
	}{
		{nil, ""},
		{[]byte{0}, "00"},
		{[]byte{0x0a, 0xff, 0x10}, "0a:ff:10"},
	}
	for _, test := range tests {
		if got := HexString(test.in); got != test.want {
			t.Errorf("HexString(%x) got %q, want %q", test.in, got, test.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	der := selfSigned(t, mustKey(t), "a")
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	fp := Fingerprint(c)
	if len(fp) != 32*3-1 || strings.ToLower(fp) != fp || strings.Count(fp, ":") != 31 {
		t.Errorf("Fingerprint got %q, want 32 colon-separated lower-case hex pairs", fp)
	}
	other, _ := x509.ParseCertificate(selfSigned(t, mustKey(t), "a"))
	if Fingerprint(other) == fp {
		t.Error("two certificates have the same fingerprint")
	}
}

func TestRandomSerial(t *testing.T) {
	t.Parallel()
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	seen := map[string]bool{}
	for range 100 {
		n, err := RandomSerial()
		if err != nil {
			t.Fatal(err)
		}
		if n.Sign() <= 0 || n.Cmp(limit) >= 0 {
			t.Fatalf("RandomSerial() = %s, want in (0, 2^128)", n)
		}
		if seen[n.String()] {
			t.Fatalf("RandomSerial() repeated %s", n)
		}
		seen[n.String()] = true
	}
}

// FuzzParsePEM feeds anything to the PEM parsers (ParseCerts, ParseCert,
// ParseSigner, ParseCSR): they must never panic, and what they accept must
// be usable. raw is parsed as it is; der is also wrapped in a block of each
// type, so that the fuzzer explores the DER parsers behind the PEM too.
func FuzzParsePEM(f *testing.F) {
	key := mustKey(f)
	ecDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		f.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	pkcs1 := x509.MarshalPKCS1PrivateKey(testRSAKey())
	certDER := selfSigned(f, key, "root")
	cert := EncodeCert(certDER)
	csr, err := CreateCSR(NewServiceID("abc.trellis", "dc1", "web"), key)
	if err != nil {
		f.Fatal(err)
	}
	csrBlock, _ := pem.Decode([]byte(csr))
	keyPEM := pemOf("EC PRIVATE KEY", ecDER)
	for _, seed := range []struct {
		raw string
		der []byte
	}{
		{"", nil},
		{"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", nil},
		{"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", []byte{0x30, 0}},
		{keyPEM, ecDER},
		{pemOf("PRIVATE KEY", pkcs8), pkcs8},
		{pemOf("RSA PRIVATE KEY", pkcs1), pkcs1},
		{cert, certDER},
		{cert + cert, certDER[:len(certDER)/2]},
		{cert + keyPEM, nil},
		{csr, csrBlock.Bytes},
		{keyPEM[:len(keyPEM)/2], nil},
		{cert[:len(cert)-30], nil},
	} {
		f.Add(seed.raw, seed.der)
	}
	types := []string{"CERTIFICATE", "EC PRIVATE KEY", "RSA PRIVATE KEY", "PRIVATE KEY", "CERTIFICATE REQUEST"}
	f.Fuzz(func(t *testing.T, raw string, der []byte) {
		checkPEMParsers(t, raw)
		for _, typ := range types {
			checkPEMParsers(t, pemOf(typ, der))
		}
	})
}

func checkPEMParsers(t *testing.T, in string) {
	t.Helper()
	if certs, err := ParseCerts(in); err == nil {
		if len(certs) == 0 {
			t.Fatal("ParseCerts succeeded with no certificate")
		}
		for _, c := range certs {
			_ = Fingerprint(c)
			_, _ = ServiceIDFromCert(c)
		}
		if c, err := ParseCert(in); err != nil || !c.Equal(certs[0]) {
			t.Fatalf("ParseCert disagrees with ParseCerts: %v", err)
		}
	}
	if signer, err := ParseSigner(in); err == nil {
		if signer.Public() == nil {
			t.Fatal("ParseSigner gave a signer without a public key")
		}
		_ = ValidateSigningKey(signer)
		if enc, err := EncodeKey(signer); err == nil {
			back, err := ParseSigner(enc)
			type equaler interface{ Equal(crypto.PublicKey) bool }
			if err != nil || !back.Public().(equaler).Equal(signer.Public()) {
				t.Fatalf("EncodeKey then ParseSigner gave %v, %v: not the key parsed", back, err)
			}
		}
	}
	if csr, err := ParseCSR(in); err == nil {
		for _, u := range csr.URIs {
			_, _ = ParseServiceID(u.String())
		}
	}
}

// A URI SAN of a certificate goes through net/url: ServiceIDFromCert must
// read it back exactly as ServiceID.URI made it.
func TestServiceID_URIThroughCertificate(t *testing.T) {
	t.Parallel()
	key := mustKey(t)
	id := NewServiceID("abc.trellis", "dc1", "web-1")
	u, err := id.URI()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    time.Now(),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ServiceIDFromCert(c)
	if err != nil || got != id {
		t.Errorf("ServiceIDFromCert got %#v, %v, want %#v", got, err, id)
	}
}
