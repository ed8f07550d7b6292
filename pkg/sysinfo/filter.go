package sysinfo

import (
	"slices"
	"strings"
)

// pseudoFS are filesystem types that RealDisks leaves out, lower case.
// Their "usage" is not storage an operator manages, or it is reported
// elsewhere:
//   - kernel interfaces with no storage at all (proc, sysfs, cgroup,
//     devpts, debugfs, …);
//   - memory-backed filesystems (tmpfs, devtmpfs, ramfs): their use is
//     memory, already in mem; a host has many of them (/run, /dev/shm,
//     /run/user/N) and they would bloat every sample;
//   - read-only images that are always 100% full (squashfs snaps, erofs,
//     iso9660/udf/cdfs media);
//   - container layers (overlay, aufs) stacked on a disk that is reported
//     anyway; one per running container. The exception is a container's
//     own root (/), which is the only view of its disk it has.
//
// Network filesystems (nfs, cifs, fuse.sshfs, …) are kept: they are real
// storage, and the reason reads run under a Guard.
var pseudoFS = map[string]bool{
	"autofs": true, "binfmt_misc": true, "bpf": true, "cgroup": true, "cgroup2": true,
	"configfs": true, "cpuset": true, "debugfs": true, "devfs": true, "devpts": true,
	"devtmpfs": true, "efivarfs": true, "fdescfs": true, "fusectl": true, "hugetlbfs": true,
	"kernfs": true, "linprocfs": true, "linsysfs": true, "mqueue": true, "nfsd": true,
	"nsfs": true, "pipefs": true, "proc": true, "procfs": true, "pstore": true,
	"ptyfs": true, "ramfs": true, "rpc_pipefs": true, "securityfs": true, "selinuxfs": true,
	"sockfs": true, "sysfs": true, "tmpfs": true, "tracefs": true,
	"fuse.gvfsd-fuse": true, "fuse.lxcfs": true, "fuse.portal": true, "fuse.snapfuse": true,
	"squashfs": true, "erofs": true, "iso9660": true, "udf": true, "cdfs": true,
	"overlay": true, "aufs": true,
}

// rootLayers are pseudoFS types kept when mounted at / (a container's root).
var rootLayers = map[string]bool{"overlay": true, "aufs": true}

// IsPseudoFS reports whether RealDisks leaves filesystems of type fstype
// out (wherever they are mounted, except overlay and aufs at /).
func IsPseudoFS(fstype string) bool { return pseudoFS[strings.ToLower(fstype)] }

// RealDisks returns the partitions that hold storage, sorted by mount
// point: pseudo filesystems are left out (see IsPseudoFS), and a device
// mounted more than once (bind mounts, such as a container's /etc/hosts)
// is kept once, at its shortest mount point, since every mount of it
// reports the same usage. macOS's helper APFS volumes under
// /System/Volumes (VM, Preboot, Update, …) are left out too, except
// /System/Volumes/Data, which holds the user's data.
func RealDisks(parts []Partition) []Partition {
	out := make([]Partition, 0, len(parts))
	for _, p := range parts {
		fs := strings.ToLower(p.FSType)
		switch {
		case p.Mount == "":
			continue
		case pseudoFS[fs] && !(rootLayers[fs] && p.Mount == "/"):
			continue
		case fs == "apfs" && strings.HasPrefix(p.Mount, "/System/Volumes/") && p.Mount != "/System/Volumes/Data":
			continue
		}
		out = append(out, p)
	}
	// Shortest mount first, so that deduplication keeps it.
	slices.SortStableFunc(out, func(a, b Partition) int {
		if d := len(a.Mount) - len(b.Mount); d != 0 {
			return d
		}
		return strings.Compare(a.Mount, b.Mount)
	})
	seenDev := map[string]bool{}
	seenMount := map[string]bool{}
	kept := out[:0]
	for _, p := range out {
		if seenMount[p.Mount] { // mounted over: one usage per mount point
			continue
		}
		if dev := p.Device; dev != "" && dev != "none" {
			if seenDev[dev] {
				continue
			}
			seenDev[dev] = true
		}
		seenMount[p.Mount] = true
		kept = append(kept, p)
	}
	slices.SortFunc(kept, func(a, b Partition) int { return strings.Compare(a.Mount, b.Mount) })
	return kept
}

// skipDiskPrefixes are block devices WholeDisks leaves out: loop devices
// (snaps, images), RAM disks, compressed swap in RAM, floppies and optical
// drives.
var skipDiskPrefixes = []string{"loop", "ram", "zram", "fd", "sr"}

// WholeDisks returns the I/O counters of whole disks, sorted by name:
// loop, RAM, floppy and optical devices are left out, so are devices that
// never did any I/O, and partitions of a disk that is listed itself
// (sda1 of sda, nvme0n1p1 of nvme0n1), whose I/O is part of the disk's.
func WholeDisks(io []DiskIO) []DiskIO {
	names := make(map[string]bool, len(io))
	for _, d := range io {
		names[d.Name] = true
	}
	out := make([]DiskIO, 0, len(io))
	for _, d := range io {
		if d.Reads == 0 && d.Writes == 0 && d.ReadBytes == 0 && d.WriteBytes == 0 {
			continue
		}
		if slices.ContainsFunc(skipDiskPrefixes, func(p string) bool { return hasDevPrefix(d.Name, p) }) {
			continue
		}
		if isPartition(d.Name, names) {
			continue
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b DiskIO) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// hasDevPrefix reports whether name is prefix followed by a digit or
// nothing else ("loop0", "sr0"; not "fdisk-thing" for "fd" unless a digit
// follows).
func hasDevPrefix(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	return ok && (rest == "" || rest[0] >= '0' && rest[0] <= '9')
}

// isPartition reports whether name is a partition of another device in
// names: the device's name followed by digits, or by "p" and digits when
// the device's name ends with a digit.
func isPartition(name string, names map[string]bool) bool {
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	if i == len(name) || i == 0 {
		return false
	}
	parent := name[:i]
	if names[parent] {
		return true
	}
	if p, ok := strings.CutSuffix(parent, "p"); ok && p != "" && p[len(p)-1] >= '0' && p[len(p)-1] <= '9' {
		return names[p]
	}
	return false
}
