package sysinfo

import (
	"slices"
	"testing"
)

func mounts(ps []Partition) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.Mount)
	}
	return out
}

func TestRealDisks(t *testing.T) {
	tests := []struct {
		name  string
		parts []Partition
		want  []string
	}{
		{"typical host", TypicalHost().Partitions, []string{"/", "/data", "/mnt/home"}},
		{"kernel and memory filesystems are left out", []Partition{
			{Device: "proc", Mount: "/proc", FSType: "proc"},
			{Device: "sysfs", Mount: "/sys", FSType: "sysfs"},
			{Device: "udev", Mount: "/dev", FSType: "devtmpfs"},
			{Device: "cgroup", Mount: "/sys/fs/cgroup/cpu", FSType: "cgroup"},
			{Device: "tmpfs", Mount: "/dev/shm", FSType: "tmpfs"},
			{Device: "tmpfs", Mount: "/run/user/1000", FSType: "TMPFS"},
			{Device: "/dev/vda", Mount: "/", FSType: "ext4"},
		}, []string{"/"}},
		{"container root on overlay is kept, other overlays are not", []Partition{
			{Device: "overlay", Mount: "/", FSType: "overlay"},
			{Device: "overlay", Mount: "/var/lib/docker/overlay2/x/merged", FSType: "overlay"},
		}, []string{"/"}},
		{"bind mounts of one device count once, at the shortest path", []Partition{
			{Device: "/dev/sda1", Mount: "/etc/hosts", FSType: "ext4"},
			{Device: "/dev/sda1", Mount: "/etc/resolv.conf", FSType: "ext4"},
			{Device: "/dev/sda1", Mount: "/", FSType: "ext4"},
		}, []string{"/"}},
		{"a mount point mounted over is listed once", []Partition{
			{Device: "/dev/sdb1", Mount: "/data", FSType: "xfs"},
			{Device: "/dev/sdc1", Mount: "/data", FSType: "xfs"},
		}, []string{"/data"}},
		{"network filesystems are kept", []Partition{
			{Device: "nas:/export", Mount: "/mnt/nas", FSType: "nfs4"},
			{Device: "//srv/share", Mount: "/mnt/smb", FSType: "cifs"},
			{Device: "u@h:/", Mount: "/mnt/ssh", FSType: "fuse.sshfs"},
		}, []string{"/mnt/nas", "/mnt/smb", "/mnt/ssh"}},
		{"read-only images are left out", []Partition{
			{Device: "/dev/loop0", Mount: "/snap/core/1", FSType: "squashfs"},
			{Device: "/dev/sr0", Mount: "/media/cdrom", FSType: "iso9660"},
			{Device: "D:", Mount: "D:", FSType: "CDFS"},
			{Device: "C:", Mount: "C:", FSType: "NTFS"},
		}, []string{"C:"}},
		{"macOS helper volumes are left out, Data is kept", []Partition{
			{Device: "/dev/disk3s1s1", Mount: "/", FSType: "apfs"},
			{Device: "/dev/disk3s6", Mount: "/System/Volumes/VM", FSType: "apfs"},
			{Device: "/dev/disk3s2", Mount: "/System/Volumes/Preboot", FSType: "apfs"},
			{Device: "/dev/disk3s5", Mount: "/System/Volumes/Data", FSType: "apfs"},
			{Device: "devfs", Mount: "/dev", FSType: "devfs"},
		}, []string{"/", "/System/Volumes/Data"}},
		{"no mount point", []Partition{{Device: "/dev/sda2", FSType: "ext4"}}, []string{}},
		{"nothing", nil, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mounts(RealDisks(tt.parts)); !slices.Equal(got, tt.want) {
				t.Fatalf("RealDisks = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIsPseudoFS(t *testing.T) {
	for fs, want := range map[string]bool{"proc": true, "TmpFS": true, "overlay": true, "ext4": false, "nfs": false, "zfs": false, "NTFS": false} {
		if got := IsPseudoFS(fs); got != want {
			t.Errorf("IsPseudoFS(%q) = %v, want %v", fs, got, want)
		}
	}
}

func TestWholeDisks(t *testing.T) {
	io := func(names ...string) []DiskIO {
		var out []DiskIO
		for _, n := range names {
			out = append(out, DiskIO{Name: n, Reads: 1})
		}
		return out
	}
	names := func(ds []DiskIO) []string {
		out := []string{}
		for _, d := range ds {
			out = append(out, d.Name)
		}
		return out
	}
	tests := []struct {
		name string
		in   []DiskIO
		want []string
	}{
		{"typical host", TypicalHost().DiskIO, []string{"sda", "sdb"}},
		{"partitions of listed disks", io("sda", "sda1", "sda2", "nvme0n1", "nvme0n1p1", "mmcblk0", "mmcblk0p2", "vda", "vda1"), []string{"mmcblk0", "nvme0n1", "sda", "vda"}},
		{"partitions whose disk is not listed are kept", io("sdb1"), []string{"sdb1"}},
		{"loop, ram, zram, floppy and optical are left out", io("loop0", "loop12", "ram0", "zram0", "fd0", "sr0", "sdr"), []string{"sdr"}},
		{"md, dm and Windows drives are kept", io("md0", "dm-0", "C:", "disk0"), []string{"C:", "disk0", "dm-0", "md0"}},
		{"idle devices are left out", []DiskIO{{Name: "sdz"}}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := names(WholeDisks(tt.in)); !slices.Equal(got, tt.want) {
				t.Fatalf("WholeDisks = %q, want %q", got, tt.want)
			}
		})
	}
}
