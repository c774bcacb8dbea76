// Command hvsnap rescues Hyper-V checkpoint storage: it reads, checks,
// creates and converts VHD/VHDX disks and their differencing chains.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/vhd"
)

// Exit codes (README, "Exit codes").
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitFindings = 3
)

// exitErr carries an exit code with an error message (message may be empty
// when the command already printed what it had to say).
type exitErr struct {
	code int
	msg  string
}

func (e *exitErr) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &exitErr{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// silentExit ends with code without printing anything more.
func silentExit(code int) error { return &exitErr{code: code} }

var version = "0.1.0-dev"

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:    "hvsnap",
		Usage:   "rescue Hyper-V checkpoint storage: VHD/VHDX chains, space, merge, export/import",
		Version: version,
		Description: `hvsnap works on the disk files themselves (.vhd .vhdx .avhd .avhdx), on a
Windows host or on a Linux rescue host with the volumes mounted.

Exit codes: 0 ok, 1 error, 2 usage error, 3 findings (check).`,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bars"},
		},
		Commands: []*cli.Command{
			cmdInfo(),
			cmdCheck(),
			cmdCreate(),
			cmdConvert(),
			cmdReparent(),
			cmdWrite(),
			cmdSpace(),
			cmdMerge(),
			cmdCleanup(),
			cmdExport(),
			cmdImport(),
			cmdRelocate(),
			cmdDiagnose(),
			cmdRunbook(),
			cmdLab(),
		},
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usagef("%v (see hvsnap --help)", err)
		},
		ExitErrHandler: func(c *cli.Context, err error) {},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = func(c *cli.Context, err error, isSub bool) error {
			return usagef("%s: %v (see hvsnap %s --help)", c.Command.Name, err, c.Command.Name)
		}
	}
	return app
}

// run executes hvsnap with args (args[0] is the program name) and returns
// the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	unknown := ""
	app.CommandNotFound = func(c *cli.Context, name string) { unknown = name }
	err := app.Run(args)
	if err == nil && unknown != "" {
		fmt.Fprintf(stderr, "hvsnap: unknown command %q (see hvsnap --help)\n", unknown)
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	var ee *exitErr
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "hvsnap: "+ee.msg)
		}
		return ee.code
	}
	var ce cli.ExitCoder
	if errors.As(err, &ce) {
		if s := err.Error(); s != "" {
			fmt.Fprintln(stderr, "hvsnap: "+s)
		}
		return ce.ExitCode()
	}
	fmt.Fprintln(stderr, "hvsnap: "+errorLine(err))
	var ve *vhd.Error
	if errors.As(err, &ve) && errors.Is(err, vhd.ErrInvalidSpec) {
		return exitUsage
	}
	return exitError
}

// errorLine renders an error as one line.
func errorLine(err error) string {
	s := err.Error()
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
