package lab

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
)

// RandomFile writes size random bytes to path (mode 0644) and returns their
// SHA-256 in hex.
func RandomFile(path string, size int64) (string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", fmt.Errorf("failed to create %s: %w", path, err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		f.Close()
		return "", fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("failed to close %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FileSHA256 returns the SHA-256 (hex) and size of the file at path.
func FileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("failed to open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("failed to read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ClientDir is the directory (inside the lab's) where client helpers put
// downloads and ClientFile puts upload sources.
func (l *Lab) ClientDir() string { return filepath.Join(l.dir, "client") }

// ClientFile creates a file of size random bytes named name in ClientDir and
// returns its path and SHA-256.
func (l *Lab) ClientFile(name string, size int64) (path, sum string, err error) {
	if err := os.MkdirAll(l.ClientDir(), 0o755); err != nil {
		return "", "", err
	}
	path = filepath.Join(l.ClientDir(), filepath.Base(name))
	sum, err = RandomFile(path, size)
	return path, sum, err
}

const passwordAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// randomPassword returns n characters that need no quoting in URLs, lftp
// scripts or chpasswd input.
func randomPassword(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = passwordAlphabet[randomInt(len(passwordAlphabet))]
	}
	return string(b)
}

func randomInt(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return int(v.Int64())
}
