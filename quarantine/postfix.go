package quarantine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrNoPostfix is wrapped by errors about missing Postfix commands.
var ErrNoPostfix = errors.New("mxguard quarantine works with Postfix only; " +
	"with Sendmail, `mailq -qQ` lists quarantined mail and `sendmail -qQ -Q -qI<id>` then `sendmail -qI<id>` release it")

// sbin is where Postfix installs postqueue and postsuper (command_directory
// on Debian and most packages); it is not in an ordinary user's $PATH.
const sbin = "/usr/sbin"

// Postfix is the MTA behind postqueue(1) and postsuper(1). The commands run
// directly, never through a shell. postsuper needs root; postqueue -j and
// -i are open to every user by default (authorized_mailq_users,
// authorized_flush_users).
type Postfix struct {
	// ConfigDir is passed as "-c DIR" to select a Postfix instance other
	// than the default one (/etc/postfix).
	ConfigDir string
	// CommandDir holds postqueue and postsuper; "" looks them up in $PATH,
	// then in /usr/sbin.
	CommandDir string

	// run executes a command; nil runs it for real. Tests replace it.
	run func(ctx context.Context, path string, args ...string) (stdout, stderr []byte, err error)
}

var _ MTA = (*Postfix)(nil)

// Held lists the hold queue with postqueue -j.
func (p *Postfix) Held(ctx context.Context) ([]Message, error) {
	out, _, err := p.command(ctx, "postqueue", "-j")
	if err != nil {
		return nil, err
	}
	all, err := parseQueue(out)
	if err != nil {
		return nil, fmt.Errorf("postqueue -j: %w", err)
	}
	var held []Message
	for _, q := range all {
		if q.queue == "hold" {
			held = append(held, q.Message)
		}
	}
	return held, nil
}

// Release runs postsuper -H (hold → deferred queue), then postqueue -i to
// have it delivered now rather than at the next deferred queue run.
func (p *Postfix) Release(ctx context.Context, queueID string) error {
	if err := checkQueueID(queueID); err != nil {
		return err
	}
	_, stderr, err := p.command(ctx, "postsuper", "-H", queueID)
	if err := postsuperResult(queueID, "released from hold", "Released from hold", stderr, err); err != nil {
		return err
	}
	if _, _, err := p.command(ctx, "postqueue", "-i", queueID); err != nil {
		return fmt.Errorf("%s %w: %v", queueID, ErrNotScheduled, err)
	}
	return nil
}

// Delete runs postsuper -d ID hold: the trailing queue name limits the
// deletion to the hold queue.
func (p *Postfix) Delete(ctx context.Context, queueID string) error {
	if err := checkQueueID(queueID); err != nil {
		return err
	}
	_, stderr, err := p.command(ctx, "postsuper", "-d", queueID, "hold")
	return postsuperResult(queueID, "removed", "Deleted", stderr, err)
}

// postsuperResult reads what postsuper did to queueID from its standard
// error, which it writes also when that is not a terminal:
//
//	postsuper: C648F988526: released from hold
//	postsuper: Released from hold: 1 message
//
// The line about the message itself wins over the exit status: postsuper
// can fail after acting (when it cannot write its own log, say), and then
// the message was released or deleted all the same. postsuper exits 0 when
// there was nothing to do, so only its count tells that the message was not
// held.
func postsuperResult(queueID, did, summary string, stderr []byte, err error) error {
	for _, line := range strings.Split(string(stderr), "\n") {
		if strings.HasSuffix(strings.TrimSpace(line), "postsuper: "+queueID+": "+did) {
			return nil
		}
	}
	if err != nil {
		return err
	}
	if n, ok := postsuperCount(stderr, summary); ok && n == 0 {
		return fmt.Errorf("%s %w", queueID, ErrNotHeld)
	}
	return nil
}

// args puts "-c DIR" in front of a command's own arguments.
func (p *Postfix) args(args ...string) []string {
	if p.ConfigDir == "" {
		return args
	}
	return append([]string{"-c", p.ConfigDir}, args...)
}

// command runs a Postfix command. Its error names the command line and
// carries what the command said on standard error.
func (p *Postfix) command(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error) {
	path, err := p.lookPath(name)
	if err != nil {
		return nil, nil, err
	}
	args = p.args(args...)
	run := p.run
	if run == nil {
		run = execRun
	}
	stdout, stderr, err = run(ctx, path, args...)
	if err != nil {
		msg := strings.TrimSpace(string(stderr))
		if msg != "" {
			msg = ": " + strings.ReplaceAll(msg, "\n", "; ")
		}
		return stdout, stderr, fmt.Errorf("%s %s: %w%s", name, strings.Join(args, " "), err, msg)
	}
	return stdout, stderr, nil
}

func (p *Postfix) lookPath(name string) (string, error) {
	if p.CommandDir != "" {
		path := filepath.Join(p.CommandDir, name)
		if _, err := exec.LookPath(path); err != nil {
			return "", fmt.Errorf("%s not found in %s: %w", name, p.CommandDir, ErrNoPostfix)
		}
		return path, nil
	}
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	path := filepath.Join(sbin, name)
	if _, err := exec.LookPath(path); err != nil {
		return "", fmt.Errorf("%s not found (looked in $PATH and %s): %w", name, sbin, ErrNoPostfix)
	}
	return path, nil
}

// commandWait bounds how long a finished or killed command may hold its
// output pipes open (a daemon it started, say).
const commandWait = 5 * time.Second

func execRun(ctx context.Context, path string, args ...string) (stdout, stderr []byte, err error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb // stdin stays /dev/null
	cmd.WaitDelay = commandWait
	err = cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

// postsuperCountRE matches postsuper's summary line on standard error,
// e.g. "postsuper: Released from hold: 1 message" (also when the output
// is not a terminal).
var postsuperCountRE = regexp.MustCompile(`(?m)^\S*postsuper: ([A-Za-z ]+): (\d+) messages?\s*$`)

// postsuperCount returns the count of postsuper's summary line what; ok is
// false when there is none (another Postfix version may word it
// differently; the exit status is then all there is).
func postsuperCount(stderr []byte, what string) (n int, ok bool) {
	for _, m := range postsuperCountRE.FindAllSubmatch(stderr, -1) {
		if string(m[1]) == what {
			n, err := strconv.Atoi(string(m[2]))
			return n, err == nil
		}
	}
	return 0, false
}

// queued is a message from postqueue -j, in any queue.
type queued struct {
	Message
	queue string // hold, incoming, active, deferred, maildrop
}

// jsonMessage is one object of postqueue -j ("JSON OBJECT FORMAT" in
// postqueue(1)). Members not listed here are ignored, as the manual asks.
type jsonMessage struct {
	QueueName   string `json:"queue_name"`
	QueueID     string `json:"queue_id"`
	ArrivalTime int64  `json:"arrival_time"` // seconds since the epoch
	MessageSize int64  `json:"message_size"`
	Sender      string `json:"sender"`
	Recipients  []struct {
		Address string `json:"address"`
	} `json:"recipients"`
}

// maxJSONLine bounds one postqueue -j line: one message with all its
// recipients (a message to 100 000 recipients is a few MB).
const maxJSONLine = 64 << 20

// parseQueue reads postqueue -j output: one JSON object per line.
func parseQueue(out []byte) ([]queued, error) {
	var msgs []queued
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, maxJSONLine)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var j jsonMessage
		if err := json.Unmarshal(b, &j); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if j.QueueID == "" || j.QueueName == "" {
			return nil, fmt.Errorf("line %d: no queue_id or queue_name", line)
		}
		q := queued{queue: j.QueueName, Message: Message{
			QueueID: j.QueueID,
			Sender:  j.Sender,
			Size:    j.MessageSize,
		}}
		if j.ArrivalTime > 0 {
			q.Arrival = time.Unix(j.ArrivalTime, 0)
		}
		for _, r := range j.Recipients {
			q.Recipients = append(q.Recipients, r.Address)
		}
		msgs = append(msgs, q)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return msgs, nil
}
