// Command go_note verifies a torchwitness checkpoint with Go's reference signed-note implementation
// (golang.org/x/mod/sumdb/note): the log's Ed25519 signature through note.NewVerifier, and C2SP
// cosignature/v1 lines through a note.Verifier written here from the tlog-cosignature spec
// (x/mod only knows signature type 0x01).
//
// Usage:
//
//	go_note NOTE_FILE LOG_VKEY [WITNESS_VKEY...]   verify; one line per signature ("NAME" or "NAME time T")
//	go_note keygen NAME                           print a new signer key and its verifier key, one a line
//	go_note sign SKEY < TEXT                      print TEXT signed as a note (a log that is not torchwitness)
//
// Exits 1 on any failure.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type cosigner struct {
	name string
	hash uint32
	key  ed25519.PublicKey
	seen map[string]uint64 // verified signature -> timestamp, for the report
}

func (c *cosigner) Name() string    { return c.name }
func (c *cosigner) KeyHash() uint32 { return c.hash }

// Verify checks a timestamped_signature: u64 big-endian POSIX time, then Ed25519 over
// "cosignature/v1\ntime T\n" || note text.
func (c *cosigner) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	if ts >= 1<<63 {
		return false
	}
	signed := append([]byte("cosignature/v1\ntime "+strconv.FormatUint(ts, 10)+"\n"), msg...)
	if !ed25519.Verify(c.key, signed, sig[8:]) {
		return false
	}
	c.seen[c.name] = ts
	return true
}

func newCosigner(vkey string) (*cosigner, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("witness vkey %q is not NAME+ID+KEY", vkey)
	}
	hash, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 0x04 {
		return nil, fmt.Errorf("witness vkey %q is not a type 0x04 Ed25519 key", vkey)
	}
	id := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	if binary.BigEndian.Uint32(id[:4]) != uint32(hash) {
		return nil, fmt.Errorf("witness vkey %q: key id does not match", vkey)
	}
	return &cosigner{name: parts[0], hash: uint32(hash), key: raw[1:], seen: map[string]uint64{}}, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "keygen" {
		skey, vkey, err := note.GenerateKey(rand.Reader, os.Args[2])
		if err != nil {
			fail(err)
		}
		fmt.Println(skey)
		fmt.Println(vkey)
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "sign" {
		signer, err := note.NewSigner(strings.TrimSpace(os.Args[2]))
		if err != nil {
			fail(err)
		}
		text, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail(err)
		}
		msg, err := note.Sign(&note.Note{Text: string(text)}, signer)
		if err != nil {
			fail(err)
		}
		os.Stdout.Write(msg)
		return
	}
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: go_note NOTE_FILE LOG_VKEY [WITNESS_VKEY...]")
		os.Exit(2)
	}
	msg, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	logVerifier, err := note.NewVerifier(strings.TrimSpace(os.Args[2]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "log vkey:", err)
		os.Exit(1)
	}
	verifiers := []note.Verifier{logVerifier}
	var cosigners []*cosigner
	for _, v := range os.Args[3:] {
		c, err := newCosigner(strings.TrimSpace(v))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cosigners = append(cosigners, c)
		verifiers = append(verifiers, c)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "note.Open:", err)
		os.Exit(1)
	}
	verified := map[string]bool{}
	for _, s := range n.Sigs {
		verified[s.Name] = true
	}
	if !verified[logVerifier.Name()] {
		fmt.Fprintln(os.Stderr, "no valid log signature")
		os.Exit(1)
	}
	fmt.Println(logVerifier.Name())
	for _, c := range cosigners {
		ts, ok := c.seen[c.name]
		if !ok || !verified[c.name] {
			fmt.Fprintln(os.Stderr, "no valid cosignature of", c.name)
			os.Exit(1)
		}
		fmt.Printf("%s time %d\n", c.name, ts)
	}
}
