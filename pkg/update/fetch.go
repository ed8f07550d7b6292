package update

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// maxRedirects bounds the redirects followed by a download.
const maxRedirects = 5

// NewHTTPClient is the client downloads use: TLS 1.2 or later, the
// environment's proxy, and redirects only to URLs that CheckURL accepts.
func NewHTTPClient(allowHTTP bool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	tr.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme == "file" {
				return errors.New("redirect to a file URL refused")
			}
			if _, err := CheckURL(req.URL.String(), allowHTTP); err != nil {
				return fmt.Errorf("redirect to %s refused: %w", req.URL.Redacted(), err)
			}
			return nil
		},
	}
}

// Fetch copies the resource at u into the new file dst (mode 0600), at
// most maxBytes, and returns its size. A download that ends early, a
// non-200 answer, or more than maxBytes is an error (dst is removed).
func Fetch(ctx context.Context, client *http.Client, u *url.URL, dst string, maxBytes int64) (n int64, err error) {
	var body io.ReadCloser
	switch u.Scheme {
	case "file":
		path, err := filePath(u)
		if err != nil {
			return 0, err
		}
		f, err := os.Open(path)
		if err != nil {
			return 0, fmt.Errorf("download: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return 0, fmt.Errorf("download: %w", err)
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			return 0, fmt.Errorf("download: %s is not a regular file", path)
		}
		if fi.Size() > maxBytes {
			f.Close()
			return 0, fmt.Errorf("download: %d bytes: %w (%d)", fi.Size(), ErrTooLarge, maxBytes)
		}
		body = f
	case "http", "https":
		if client == nil {
			client = NewHTTPClient(false)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return 0, fmt.Errorf("download: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("download: %w", redactErr(err, u))
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return 0, fmt.Errorf("download: %s answered %s", u.Redacted(), resp.Status)
		}
		if resp.ContentLength > maxBytes {
			resp.Body.Close()
			return 0, fmt.Errorf("download: %d bytes announced: %w (%d)", resp.ContentLength, ErrTooLarge, maxBytes)
		}
		body = resp.Body
	default:
		return 0, fmt.Errorf("download: scheme %q not supported", u.Scheme)
	}
	defer body.Close()
	_ = os.Remove(dst)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("download: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("download: %w", cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	n, err = io.Copy(f, io.LimitReader(ctxReader{ctx, body}, maxBytes+1))
	switch {
	case err != nil:
		return n, fmt.Errorf("download interrupted after %d bytes: %w", n, redactErr(err, u))
	case n > maxBytes:
		return n, fmt.Errorf("download: %w (%d)", ErrTooLarge, maxBytes)
	}
	if err := f.Sync(); err != nil {
		return n, fmt.Errorf("download: %w", err)
	}
	return n, nil
}

// redactErr drops the URL's query string from an error text, in case it
// carries a token.
func redactErr(err error, u *url.URL) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, u.Redacted(), ue.Err)
	}
	return err
}

// ctxReader stops a file copy when ctx ends (http bodies do on their own).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Verify checks that data has the sha256 and carries the ed25519 signature
// by pub (the signature covers the bytes of the binary exactly).
func Verify(data []byte, sum [32]byte, sig []byte, pub ed25519.PublicKey) error {
	got := sha256.Sum256(data)
	if subtle.ConstantTimeCompare(got[:], sum[:]) != 1 {
		return fmt.Errorf("%w: sha256 of the download is %x, not the expected %x (%d bytes)", ErrVerify, got, sum, len(data))
	}
	if len(pub) != ed25519.PublicKeySize {
		return ErrNoKey
	}
	if !ed25519.Verify(pub, data, sig) {
		return fmt.Errorf("%w: the signature is not by update.public_key", ErrVerify)
	}
	return nil
}
