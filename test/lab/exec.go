package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// waitDelay bounds how long Wait waits for a killed command's output pipes:
// a grandchild that inherited them must not hang the test.
const waitDelay = 2 * time.Second

// CommandError is returned by Run (and the client helpers) when a command
// fails. Its message includes the tail of the output; errors.As with
// *exec.ExitError (through Unwrap) gives the exit code.
type CommandError struct {
	NS     string   // logical namespace, "" for the root namespace
	Args   []string // the command, without the `ip netns exec` prefix
	Output []byte   // combined stdout and stderr
	Err    error
}

func (e *CommandError) Error() string {
	out := e.Output
	if len(out) > 4096 {
		out = append([]byte("[...]"), out[len(out)-4096:]...)
	}
	return fmt.Sprintf("failed to run %q in %s: %v\n%s", strings.Join(e.Args, " "), e.NS, e.Err, bytes.TrimSpace(out))
}

func (e *CommandError) Unwrap() error { return e.Err }

// ExitCode returns the exit code carried by err (from Run or a client
// helper), or -1 when err is not an exit status.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// command returns a command in the root namespace (ns == "") or in ns,
// killed when ctx ends; see prepare for its environment.
func (l *Lab) command(ctx context.Context, ns string, name string, args ...string) *exec.Cmd {
	name, args = l.nsArgs(ns, name, args)
	return l.prepare(exec.CommandContext(ctx, name, args...))
}

// nsArgs prefixes a command with `ip netns exec NAME` for ns != "".
func (l *Lab) nsArgs(ns, name string, args []string) (string, []string) {
	if ns == "" {
		return name, args
	}
	return "ip", append([]string{"netns", "exec", l.Name(ns), name}, args...)
}

// prepare gives cmd a clean environment (no proxy variables, which curl
// and lftp honour; HOME in the lab so no user rc file is read) and bounds
// Wait for output pipes held by grandchildren.
func (l *Lab) prepare(cmd *exec.Cmd) *exec.Cmd {
	cmd.Env = l.env()
	cmd.WaitDelay = waitDelay
	return cmd
}

func (l *Lab) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToLower(k), "_proxy") || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+l.dir)
}

// Exec returns a command that runs name in namespace ns (through
// `ip netns exec`, which execs it: the PID is the command's). The caller
// owns it; use Start for a process the lab should track and kill.
//
// The process enters ns after Start returns (`ip` switches, then execs):
// until then the lab's cleanup, which kills what it finds in the
// namespace, cannot see it. A caller that leaves such a process running
// waits for a sign of it from inside first (its output, a socket).
func (l *Lab) Exec(ns string, name string, args ...string) *exec.Cmd {
	name, args = l.nsArgs(ns, name, args)
	return l.prepare(exec.Command(name, args...))
}

// ExecContext is Exec with a context that kills the command.
func (l *Lab) ExecContext(ctx context.Context, ns string, name string, args ...string) *exec.Cmd {
	return l.command(ctx, ns, name, args...)
}

// Run runs name in ns and returns its combined output. A failure is a
// *CommandError holding the output.
func (l *Lab) Run(ctx context.Context, ns string, name string, args ...string) ([]byte, error) {
	return l.run(l.command(ctx, ns, name, args...), ns, name, args)
}

// RunInput is Run with stdin.
func (l *Lab) RunInput(ctx context.Context, stdin string, ns string, name string, args ...string) ([]byte, error) {
	cmd := l.command(ctx, ns, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	return l.run(cmd, ns, name, args)
}

func (l *Lab) run(cmd *exec.Cmd, ns, name string, args []string) ([]byte, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, &CommandError{NS: ns, Args: append([]string{name}, args...), Output: out, Err: err}
	}
	return out, nil
}

// Process is a background command started by Start. The lab kills it
// (SIGKILL, by PID) during cleanup if it is still running.
type Process struct {
	// Name is the command name, NS its logical namespace.
	Name, NS string
	// LogPath is the file receiving its stdout and stderr; failed tests
	// print its tail.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed
}

// Start runs name in ns in the background, output to a log file under the
// lab's directory. It calls t.Fatalf if the command cannot be started.
func (l *Lab) Start(ns string, name string, args ...string) *Process {
	l.t.Helper()
	p, err := l.start(ns, name, args...)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return p
}

func (l *Lab) start(ns string, name string, args ...string) (*Process, error) {
	return l.startEnv(ns, nil, name, args...)
}

// startEnv is start with extra environment variables ("KEY=value").
func (l *Lab) startEnv(ns string, env []string, name string, args ...string) (*Process, error) {
	logDir := filepath.Join(l.dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", logDir, err)
	}
	logPath := filepath.Join(logDir, fmt.Sprintf("%03d-%s-%s.log", l.nextSeq(), ns, filepath.Base(name)))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("failed to create log: %w", err)
	}
	defer f.Close() // the child has its own copy
	cmd := l.Exec(ns, name, args...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = f, f
	p := &Process{Name: name, NS: ns, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start %s in %s: %w", name, ns, err)
	}
	l.procs = append(l.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process ID (the command's own: `ip netns exec` execs it).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit error (nil for status 0); valid after Done.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return errors.New("process still running")
	}
}

// Wait waits for the process to exit or ctx to end.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits for the exit; when ctx ends first it sends
// SIGKILL and waits for that.
func (p *Process) Stop(ctx context.Context) error {
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.kill()
		<-p.done
		return ctx.Err()
	}
}

// Log returns what the process wrote so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

func (p *Process) kill() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill() // by PID; ESRCH-like errors mean it is gone
	}
}
