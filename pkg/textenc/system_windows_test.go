package textenc

import (
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/windows"
)

// SystemPriors are the console (when there is one), OEM and ANSI code
// pages, in that order, without duplicates.
func TestSystemPriorsMatchCodePages(t *testing.T) {
	var want []Encoding
	if con, err := windows.GetConsoleOutputCP(); err == nil {
		want = appendPrior(want, con)
	}
	oem, _, _ := procGetOEMCP.Call()
	want = appendPrior(want, uint32(oem))
	want = appendPrior(want, windows.GetACP())
	got := SystemPriors(nil)
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("SystemPriors = %v, want %v", got, want)
	}
	for i := range got {
		if got[i].Name() != want[i].Name() {
			t.Fatalf("SystemPriors = %v, want %v", got, want)
		}
	}
	t.Logf("ACP %d OEMCP %d: priors %v", windows.GetACP(), oem, got)
}

// TestLocaleDecodeRealCmd decodes what cmd really prints in the system's
// code page (under Wine: LC_ALL=zh_CN.UTF-8 gives 936, ru_RU.UTF-8 1251).
func TestLocaleDecodeRealCmd(t *testing.T) {
	var text, enc string
	switch acp := windows.GetACP(); acp {
	case 936:
		text, enc = "你好，世界", "gbk"
	case 1251:
		text, enc = "Привет, мир", "windows-1251"
	default:
		t.Skipf("ANSI code page %d: run under LC_ALL=zh_CN.UTF-8 or ru_RU.UTF-8", acp)
	}
	c := exec.Command("cmd.exe")
	c.SysProcAttr = &syscall.SysProcAttr{CmdLine: `cmd.exe /d /c echo ` + text}
	raw, err := c.Output()
	if err != nil {
		t.Fatal(err)
	}
	r := (&Decoder{Priors: SystemPriors(nil)}).Decode(raw, false)
	if string(r.Text) != text+" \r\n" && string(r.Text) != text+"\r\n" || r.Encoding.Name() != enc || !r.Confident {
		t.Fatalf("cmd wrote %q, decoded %q from %s (confident %v); want %q from %s", raw, r.Text, r.Encoding, r.Confident, text, enc)
	}
	// The same bytes in two-byte chunks.
	var chunks [][]byte
	for i := 0; i < len(raw); i += 2 {
		chunks = append(chunks, raw[i:min(i+2, len(raw))])
	}
	if got := streamAll(t, &Decoder{Priors: SystemPriors(nil)}, chunks, false); got != string(r.Text) {
		t.Fatalf("streamed %q, want %q", got, r.Text)
	}
}
