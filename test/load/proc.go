package load

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTicks is sysconf(_SC_CLK_TCK), the unit of utime and stime in
// /proc/PID/stat: 100 on every Linux architecture Go supports.
const clockTicks = 100

// Proc is what /proc says about a process at one moment.
type Proc struct {
	// RSS is the resident set size in bytes (VmRSS); HWM its peak
	// (VmHWM).
	RSS, HWM int64
	// Threads is the number of OS threads.
	Threads int
	// CPU is user plus system time so far (utime + stime).
	CPU time.Duration
}

// ReadProc reads /proc/PID/status and /proc/PID/stat.
func ReadProc(pid int) (Proc, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Proc{}, fmt.Errorf("failed to read process status: %w", err)
	}
	p, err := parseStatus(status)
	if err != nil {
		return Proc{}, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Proc{}, fmt.Errorf("failed to read process stat: %w", err)
	}
	if p.CPU, err = parseStat(stat); err != nil {
		return Proc{}, err
	}
	return p, nil
}

// parseStatus reads VmRSS, VmHWM and Threads from /proc/PID/status
// (proc(5)); sizes are in kB, meaning KiB.
func parseStatus(b []byte) (Proc, error) {
	var p Proc
	var haveRSS bool
	for line := range bytes.Lines(b) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(val)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			continue
		}
		switch string(key) {
		case "VmRSS":
			p.RSS, haveRSS = n<<10, true
		case "VmHWM":
			p.HWM = n << 10
		case "Threads":
			p.Threads = int(n)
		}
	}
	if !haveRSS {
		return Proc{}, errors.New("no VmRSS in process status")
	}
	return p, nil
}

// parseStat returns utime + stime from /proc/PID/stat (fields 14 and 15,
// proc(5)). The command name (field 2) is in parentheses and may hold
// spaces and parentheses, so fields are counted after the last ')'.
func parseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed process stat: no command name")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed process stat: %d fields", len(f)+2)
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed process stat: utime or stime")
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// ReadSmapsRollup returns the fields of /proc/PID/smaps_rollup in bytes,
// keyed by name ("Rss", "Pss", "Anonymous", "Pss_File", ...).
func ReadSmapsRollup(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return nil, fmt.Errorf("failed to read smaps_rollup: %w", err)
	}
	return parseSmapsRollup(b)
}

func parseSmapsRollup(b []byte) (map[string]int64, error) {
	m := map[string]int64{}
	for line := range bytes.Lines(b) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue // the header line: address range and "[rollup]"
		}
		f := bytes.Fields(val)
		if len(f) != 2 || string(f[1]) != "kB" {
			continue
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("malformed smaps_rollup line %q", bytes.TrimSpace(line))
		}
		m[string(key)] = n << 10
	}
	if _, ok := m["Rss"]; !ok {
		return nil, errors.New("no Rss in smaps_rollup")
	}
	return m, nil
}

// RaiseFileLimit raises this process's RLIMIT_NOFILE to n, soft and hard,
// and returns the soft limit in force afterwards. Raising the hard limit
// needs CAP_SYS_RESOURCE (up to fs.nr_open); without it the soft limit
// goes up to the hard one and the result says how far that is. Processes
// started afterwards inherit the limit: Go restores the limit it found at
// start-up for children only while the program has not set it itself.
func RaiseFileLimit(n uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("failed to read RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur >= n {
		return lim.Cur, nil
	}
	want := syscall.Rlimit{Cur: n, Max: max(lim.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return n, nil
	} else if !errors.Is(err, syscall.EPERM) {
		return 0, fmt.Errorf("failed to raise RLIMIT_NOFILE to %d: %w", n, err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("failed to raise RLIMIT_NOFILE to its hard limit %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}
