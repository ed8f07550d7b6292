package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/update"
)

func releaseCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "release sign BINARY --key FILE",
		Short: "Release tools: sign an agent binary for agent.update",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var keyFile, ver, url, output string
	sign := &cobra.Command{
		Use:   "sign BINARY --key FILE [--version V] [--url URL]",
		Short: "Print the sha256 and the ed25519 signature of a binary, and the agent.update args",
		Long: `Sign an agent binary with the update key (a private key written by mqagent keygen; its
public key is the agents' update.public_key, a key separate from the command keys).
Prints the sha256, the signature, the public key, and the args object of agent.update:

  mqagent release sign dist/mqagent-linux-amd64 --key update.key --version 1.4.0 \
      --url https://dl.example.com/mqagent/1.4.0/mqagent-linux-amd64

Without --version the binary is run once (BINARY version) when it runs on this machine.
With -o json only the args object is printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := readPrivateKey(keyFile)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("release sign: %w", err)
			}
			if ver == "" {
				ver = binaryVersion(args[0])
			}
			if ver != "" && !update.ValidVersion(ver) {
				return fmt.Errorf("release sign: --version %q is not a version", ver)
			}
			if url != "" {
				if _, err := update.CheckURL(url, true); err != nil {
					return fmt.Errorf("release sign: --url: %w", err)
				}
			}
			sum := sha256.Sum256(data)
			a := protocol.UpdateArgs{
				Version: ver, URL: url, SHA256: hex.EncodeToString(sum[:]),
				Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, data)),
			}
			j, _ := json.Marshal(a)
			if output == "json" {
				fmt.Fprintln(cmd.OutOrStdout(), string(j))
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "binary\t%s (%d bytes)\n", args[0], len(data))
			fmt.Fprintf(w, "version\t%s\n", orDefault(ver, "(unknown: pass --version)"))
			fmt.Fprintf(w, "sha256\t%s\nsignature\t%s\n", a.SHA256, a.Signature)
			fmt.Fprintf(w, "public key\t%s\t(must be the agents' update.public_key)\n", base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)))
			fmt.Fprintf(w, "args\t%s\n", j)
			return w.Flush()
		},
	}
	sign.Flags().StringVar(&keyFile, "key", envDefault("MQAGENT_UPDATE_KEY", ""), "update signing key: a private key file from mqagent keygen (env MQAGENT_UPDATE_KEY)")
	sign.Flags().StringVar(&ver, "version", "", "the binary's version (default: ask the binary)")
	sign.Flags().StringVar(&url, "url", "", "where the agents will download it (https, or file)")
	sign.Flags().StringVarP(&output, "output", "o", "text", "output format: text, or json (the agent.update args only)")
	_ = sign.MarkFlagRequired("key")
	c.AddCommand(sign)
	return c
}

// binaryVersion asks an agent binary for its version ("" when it does not
// run here, e.g. built for another OS).
func binaryVersion(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "version")
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return ""
	}
	v := strings.TrimSpace(out.String())
	if !update.ValidVersion(v) {
		return ""
	}
	return v
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
