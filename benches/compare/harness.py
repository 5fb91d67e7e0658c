#!/usr/bin/env python3
"""Runs the comparison of echod with its peers and writes one CSV row per measurement.

Called by run.sh once the servers and `echoc` are built. Every measurement gets a
fresh server process pinned to CPU 0 (`taskset -c 0`) and `echoc load` pinned to CPU 1,
so what one workload leaves behind (allocator caches, timers) never leaks into the next,
and each run starts once the kernel has torn down the previous run's connections.
Workloads are interleaved server by server (echod, c, tokio, threads, then c, tokio,
threads, echod, ...: the first server of each workload rotates from round to round) and
repeated ROUNDS times, so slow drifts of a shared machine hit every server alike.

What is measured, always on the *server* process:
- CPU: utime and stime from /proc/PID/stat (whole process, all threads) before and
  after the `echoc load` run, divided by the replies echoc counted;
- memory: RssAnon from /proc/PID/status (the heap and stacks; sockets live in the
  kernel and are not in it) with no client, then with N clients, divided by N;
- wakeups: voluntary + involuntary context switches, summed over the process's threads,
  across a window in which every client is connected and silent;
- syscalls: `strace -c -f -p PID` attached for a ping-pong run (no perf tracepoints on
  this kernel), divided by replies.

Output: results/latest.csv (round, workload, server, metric, value), raw echoc JSON
and server logs under results/tmp/. Configuration comes from the environment; see
run.sh.
"""

import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
TMP = os.path.join(RESULTS, "tmp")

SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")
QUICK = os.environ.get("QUICK", "0") == "1"
ROUNDS = int(os.environ.get("ROUNDS", "1" if QUICK else "3"))
DURATION = float(os.environ.get("DURATION", "1.5" if QUICK else "4"))
# Lines/s in all for the paced workload (below what echod and the C peer can answer here).
PACED_RATE = int(os.environ.get("PACED_RATE", "1000000"))
SYSCALL_DURATION = float(os.environ.get("SYSCALL_DURATION", "1" if QUICK else "3"))
IDLE_CONNS = int(os.environ.get("IDLE_CONNS", "1000" if QUICK else "10000"))
WAKE_WINDOW = float(os.environ.get("WAKE_WINDOW", "2" if QUICK else "10"))
# --rate for the "after activity" run: every connection echoes once per ACTIVE_PERIOD s.
ACTIVE_PERIOD = float(os.environ.get("ACTIVE_PERIOD", "2" if QUICK else "3"))
PINGPONG_CONNS = [
    int(n) for n in os.environ.get("PINGPONG_CONNS", "1 50 1000").split()
]
# Connections for the "held and served" check: two idle echoc processes plus a
# ping-pong one, together just under the fd limit (each process has its own limit).
HELD_CONNS = int(os.environ.get("HELD_CONNS", "0" if QUICK else "19950"))
SERVERS = os.environ.get("SERVERS", "echod c tokio threads").split()
# Servers and echoc run at this nice level (as root): on a shared machine, the other
# tenants' processes then get a small share of the two CPUs instead of half of them.
NICE = os.environ.get("NICE", "-10")
# Connection bursts are paced (the same for every server) so that no listen backlog
# overflows: that would measure SYN-ACK retransmit timers, not the server (the threads
# peer has std's listen backlog of 128). Bursts of 1,000 connections or more are paced.
CONNECT_RATE = os.environ.get("CONNECT_RATE", "4000")
# `perf record -e cpu-clock` on the pipelined runs: the user/kernel split from ~1000
# samples a second (the /proc split is the kernel's 250 Hz tick sampling) and a profile.
PERF = os.environ.get("PERF", "auto")
LINE_BYTES = 32

TARGET = os.path.join(ROOT, "target", "release")
PEER_TARGET = os.path.join(HERE, "target")
ECHOC = os.path.join(TARGET, "echoc")
SERVER_CMDS = {
    # Defaults everywhere except the connection cap (clamped to the fd limit by echod).
    "echod": [os.path.join(TARGET, "echod"), "--listen", "127.0.0.1:0",
              "--max-connections", "1000000"] + os.environ.get("ECHOD_ARGS", "").split(),
    "c": [os.path.join(PEER_TARGET, "c-server"), "127.0.0.1:0"],
    "tokio": [os.path.join(PEER_TARGET, "release", "echo-tokio-peer"), "127.0.0.1:0"],
    "threads": [os.path.join(PEER_TARGET, "release", "echo-threads-peer"), "127.0.0.1:0"],
}
# A/B of two echod builds in one run: BASELINE_ECHOD=/path/to/old/echod adds a server
# "base" with the same arguments (name it in SERVERS; report.py shows the servers it
# knows, medians.py any set).
if os.environ.get("BASELINE_ECHOD"):
    SERVER_CMDS["base"] = [os.environ["BASELINE_ECHOD"]] + SERVER_CMDS["echod"][1:]

CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(rb"listening on (127\.0\.0\.1:\d+)")

children = []  # every process we start, killed at the end whatever happens


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def spawn(cmd, cpu, **kw):
    prefix = ["nice", "-n", NICE] if NICE not in ("", "0") else []
    proc = subprocess.Popen(prefix + ["taskset", "-c", cpu] + cmd, **kw)
    children.append(proc)
    return proc


def kill(proc, sig=signal.SIGKILL):
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_all():
    for proc in children:
        kill(proc)
    children.clear()


# ---- /proc readers --------------------------------------------------------------------

def tcp_sockstat():
    """The kernel's TCP socket counts (inuse, orphan, tw, ...) from /proc/net/sockstat."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                return {k: int(v) for k, v in zip(fields[::2], fields[1::2])}
    return {}


def wait_for_tcp_teardown(timeout=30):
    """Waits until the previous run's sockets are gone (none left in use beyond a few,
    no orphans still closing), so that the next server does not pay for tearing down
    the last one's thousands of connections. TIME_WAIT entries are left to expire."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = tcp_sockstat()
        if st.get("inuse", 0) < 50 and st.get("orphan", 0) == 0:
            return True
        time.sleep(0.2)
    log(f"  TCP teardown still going after {timeout}s: {tcp_sockstat()}")
    return False


def cpu_ticks(pid):
    """(utime, stime) of the whole process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]), int(rest[12])


def cpu_busy_ticks():
    """{cpu index: (busy, steal)} in clock ticks, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v]
                # user nice system idle iowait irq softirq steal ...
                out[int(name[3:])] = (v[0] + v[1] + v[2] + v[5] + v[6], v[7])
    return out


def rss_anon_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")


def ctxt_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches",
                                        "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- servers and clients --------------------------------------------------------------

class Server:
    def __init__(self, name, tag, wrap=None):
        """`wrap`: a command that runs the server as its child (strace)."""
        self.name = name
        self.log_path = os.path.join(TMP, f"{tag}-{name}.log")
        self.log_file = open(self.log_path, "wb")
        self.proc = spawn((wrap or []) + SERVER_CMDS[name], SERVER_CPU,
                          stdout=subprocess.DEVNULL, stderr=self.log_file)
        self.pid = self.proc.pid  # taskset execs the server: same pid
        self.addr = self._wait_listening()
        if wrap:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                self.pid = int(f.read().split()[0])
        self.base_fds = fd_count(self.pid)

    def _wait_listening(self):
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log_path}")
            with open(self.log_path, "rb") as f:
                m = LISTENING.search(f.read())
            if m:
                return m.group(1).decode()
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not say where it listens")

    def wait_for_conns(self, n, client_procs, timeout=120, stall=None):
        """Waits until the server holds n more descriptors than at start. Gives up at
        `timeout`, when the clients exit, or when the count has not moved for `stall`
        seconds."""
        deadline = time.time() + timeout
        last, moved = -1, time.time()
        while time.time() < deadline:
            held = fd_count(self.pid) - self.base_fds
            if held >= n:
                return True
            if all(p.poll() is not None for p in client_procs):
                return False
            if held != last:
                last, moved = held, time.time()
            elif stall and time.time() - moved > stall:
                return False
            time.sleep(0.1)
        return False

    def wait_for_most(self, n, client_procs, timeout=60):
        """Waits for n connections; settles for 99 % of them if the rest are stuck (a
        server that falls behind a connect burst overflows its listen backlog, and
        those clients wait for SYN-ACK retransmits). Returns the count held."""
        if self.wait_for_conns(n, client_procs, timeout, stall=3):
            return n
        held = fd_count(self.pid) - self.base_fds
        if held < 0.99 * n:
            raise RuntimeError(f"{self.name}: only {held} of {n} clients connected")
        log(f"  note: {self.name} holds {held} of {n} connections; measuring those")
        return held

    def stop(self):
        if self.pid != self.proc.pid:  # wrapped: end the server, the wrapper follows
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        kill(self.proc)
        self.log_file.close()
        if self.proc in children:
            children.remove(self.proc)


def echoc_cmd(addr, conns, duration, pipeline=1, idle=False, rate=None, share=1):
    """`share`: how many echoc processes connect at once (they split CONNECT_RATE)."""
    cmd = [ECHOC, "load", addr, "--connections", str(conns), "--duration", str(duration),
           "--line-bytes", str(LINE_BYTES), "--pipeline", str(pipeline), "--json"]
    if conns >= 1000 and CONNECT_RATE:
        cmd += ["--connect-rate", str(float(CONNECT_RATE) / share)]
    if idle:
        cmd.append("--idle")
    if rate:
        cmd += ["--rate", str(rate)]
    return cmd


def start_echoc(cmd, tag):
    out = open(os.path.join(TMP, f"{tag}.echoc.out"), "wb+")
    proc = spawn(cmd, CLIENT_CPU, stdout=out, stderr=subprocess.STDOUT)
    proc.out = out
    return proc


class EchocHung(RuntimeError):
    pass


def finish_echoc(proc, timeout=120):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        children.remove(proc)
        raise EchocHung(f"echoc still running {timeout}s after it should have ended; killed")
    children.remove(proc)
    proc.out.seek(0)
    text = proc.out.read().decode(errors="replace")
    proc.out.close()
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"echoc printed no JSON (exit {proc.returncode}):\n{text[-2000:]}")


def run_echoc(cmd, tag):
    return finish_echoc(start_echoc(cmd, tag))


def perf_works():
    if PERF == "0":
        return False
    try:
        r = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null",
                            "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=20)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def perf_start(pid, path):
    return spawn(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(pid),
                  "-o", path], CLIENT_CPU, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)


def perf_finish(proc, path, profile_path):
    """Stops perf; returns the fraction of samples in user space, and writes the flat
    profile (by binary and function) next to it."""
    kill(proc, signal.SIGINT)
    children.remove(proc)
    by_dso = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children",
                             "--sort", "dso"], capture_output=True, text=True).stdout
    kernel = total = 0.0
    for line in by_dso.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m:
            total += float(m.group(1))
            if m.group(2).startswith("[kernel"):
                kernel += float(m.group(1))
    flat = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children",
                           "--sort", "dso,sym"], capture_output=True, text=True).stdout
    with open(profile_path, "w") as f:
        rows = [line for line in flat.splitlines()
                if line.strip() and not line.startswith("#")]
        f.write("\n".join(rows[:150]) + "\n")
    os.unlink(path)
    return (total - kernel) / total if total else None


# ---- workloads --------------------------------------------------------------------------

def load_run(name, tag, conns, pipeline, duration, profile=False, rate=None):
    """A load run: throughput, latency and the server's CPU per reply. With `rate`, the
    load generator is paced (lines/s in all) instead of saturated."""
    srv = Server(name, tag)
    perf = None
    try:
        if profile:
            perf_data = os.path.join(TMP, f"{tag}-{name}.perf.data")
            perf = perf_start(srv.pid, perf_data)
            time.sleep(0.3)
        u0, s0 = cpu_ticks(srv.pid)
        b0 = cpu_busy_ticks()
        t0 = time.time()
        res = run_echoc(echoc_cmd(srv.addr, conns, duration, pipeline, rate=rate),
                        f"{tag}-{name}")
        wall = time.time() - t0
        b1 = cpu_busy_ticks()
        u1, s1 = cpu_ticks(srv.pid)
        user_share = None
        if perf:
            user_share = perf_finish(perf, perf_data,
                                     os.path.join(TMP, f"{tag}-{name}.profile.txt"))
    finally:
        srv.stop()
    scpu, ccpu = int(SERVER_CPU), int(CLIENT_CPU)
    busy0 = (b1[scpu][0] - b0[scpu][0]) / CLK_TCK / wall
    steal = sum(b1[c][1] - b0[c][1] for c in (scpu, ccpu)) / CLK_TCK / wall
    replies = res["replies"]
    user_ns = (u1 - u0) * 1e9 / CLK_TCK
    sys_ns = (s1 - s0) * 1e9 / CLK_TCK
    out = {
        "replies": replies,
        "replies_per_s": res["replies_per_s"],
        "p50_us": res["latency_us"]["p50"],
        "p99_us": res["latency_us"]["p99"],
        "errors": res["errors"],
        "server_cpu_util": (user_ns + sys_ns) / 1e9 / wall,
        # What else ran on the server's CPU (other processes, interrupts), and the time
        # the hypervisor took from both CPUs: how noisy this measurement was.
        "other_load_server_cpu": max(0.0, busy0 - (user_ns + sys_ns) / 1e9 / wall),
        "client_cpu_busy": (b1[ccpu][0] - b0[ccpu][0]) / CLK_TCK / wall,
        "steal": steal,
    }
    if replies:
        out["cpu_ns_per_reply"] = (user_ns + sys_ns) / replies
        out["user_ns_per_reply"] = user_ns / replies
        out["sys_ns_per_reply"] = sys_ns / replies
        if user_share is not None:
            out["perf_user_share"] = user_share
            out["perf_user_ns_per_reply"] = user_share * (user_ns + sys_ns) / replies
    return out


STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def strace_counts(path):
    calls = {}
    with open(path) as f:
        for line in f:
            m = STRACE_ROW.match(line)
            if m and m.group(3) != "total":
                calls[m.group(3)] = int(m.group(1))
    return calls


POLLS = ("epoll_wait", "epoll_pwait", "epoll_pwait2")


def syscall_run(name, tag, conns, duration):
    """Syscalls per ping-pong reply, in two passes.

    1. `strace -c -f -p PID`: every syscall, by kind. Stopping the server at each syscall
       makes it several times slower, so more replies pile up per `epoll_wait` than in a
       real run: the poll count of this pass is too low.
    2. The server started under `strace -f -c --seccomp-bpf -e trace=epoll_wait,...`:
       only the polls stop it, so it runs at nearly full speed; this pass gives the
       polls per reply. Reads, writes and the per-connection calls (pass 1) do not
       depend on the speed: each ping-pong reply is one read and one write.
    """
    full = syscall_full_pass(name, tag, conns, duration)
    light = syscall_poll_pass(name, tag, conns, min(duration, 2.0))
    if "reads_per_reply" not in full or "polls_per_reply" not in light:
        return {"errors": full.get("errors", 0) + light.get("errors", 0)}
    out = {
        "syscalls_per_reply": full["reads_per_reply"] + full["writes_per_reply"]
        + full["other_per_reply"] + light["polls_per_reply"],
        "reads_per_reply": full["reads_per_reply"],
        "writes_per_reply": full["writes_per_reply"],
        "polls_per_reply": light["polls_per_reply"],
        "other_per_reply": full["other_per_reply"],
        "syscalls_per_reply_full_strace": full["syscalls_per_reply"],
        "polls_per_reply_full_strace": full["polls_per_reply"],
        "strace_replies_per_s": full["strace_replies_per_s"],
        "poll_pass_replies_per_s": light["replies_per_s"],
        "errors": full["errors"] + light["errors"],
    }
    return out


def syscall_poll_pass(name, tag, conns, duration):
    summary = os.path.join(TMP, f"{tag}-{name}.polls.strace")
    wrap = ["strace", "-f", "-c", "--seccomp-bpf", "-e", "trace=" + ",".join(POLLS),
            "-o", summary]
    srv = Server(name, tag + "-polls", wrap=wrap)
    try:
        time.sleep(0.2)
        res = run_echoc(echoc_cmd(srv.addr, conns, duration, 1), f"{tag}-polls-{name}")
    finally:
        srv.stop()
    calls = strace_counts(summary)
    if not res["replies"]:
        return {"errors": res["errors"]}
    return {
        "polls_per_reply": sum(calls.get(n, 0) for n in POLLS) / res["replies"],
        "replies_per_s": res["replies_per_s"],
        "errors": res["errors"],
    }


def syscall_full_pass(name, tag, conns, duration):
    srv = Server(name, tag)
    summary = os.path.join(TMP, f"{tag}-{name}.strace")
    err_path = os.path.join(TMP, f"{tag}-{name}.strace.err")
    try:
        with open(err_path, "wb") as err:
            tracer = spawn(["strace", "-c", "-f", "-o", summary, "-p", str(srv.pid)],
                           SERVER_CPU, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 10
        while time.time() < deadline:
            with open(err_path, "rb") as f:
                if b"attached" in f.read():
                    break
            time.sleep(0.05)
        time.sleep(0.2)
        res = run_echoc(echoc_cmd(srv.addr, conns, duration, 1), f"{tag}-{name}")
        kill(tracer, signal.SIGINT)
        children.remove(tracer)
    finally:
        srv.stop()
    calls = strace_counts(summary)
    replies = res["replies"]
    if not replies:
        return {"errors": res["errors"]}

    def per(*names):
        return sum(calls.get(n, 0) for n in names) / replies

    return {
        "syscalls_per_reply": sum(calls.values()) / replies,
        "reads_per_reply": per("read", "recvfrom", "readv", "recvmsg"),
        "writes_per_reply": per("write", "sendto", "writev", "sendmsg"),
        "polls_per_reply": per(*POLLS),
        "other_per_reply": sum(v for k, v in calls.items() if k not in (
            "read", "recvfrom", "readv", "recvmsg", "write", "sendto", "writev",
            "sendmsg") + POLLS) / replies,
        "strace_replies_per_s": res["replies_per_s"],
        "errors": res["errors"],
    }


def idle_run(name, tag, conns, window):
    """N silent clients: RSS per connection, and wakeups over `window` seconds."""
    srv = Server(name, tag)
    try:
        time.sleep(0.3)
        rss0 = rss_anon_bytes(srv.pid)
        # echoc holds the connections this long once all are up; the server may accept
        # the last ones a few seconds after echoc saw its handshakes complete.
        hold = window + 8
        client = start_echoc(echoc_cmd(srv.addr, conns, hold, idle=True), f"{tag}-{name}")
        held = srv.wait_for_most(conns, [client])
        time.sleep(1.0)  # banners out, the loop asleep
        held = max(held, fd_count(srv.pid) - srv.base_fds)
        rss1 = rss_anon_bytes(srv.pid)
        c0 = ctxt_switches(srv.pid)
        u0, s0 = cpu_ticks(srv.pid)
        time.sleep(window)
        c1 = ctxt_switches(srv.pid)
        u1, s1 = cpu_ticks(srv.pid)
        rss2 = rss_anon_bytes(srv.pid)
        res = finish_echoc(client)
    finally:
        srv.stop()
    return {
        "rss_idle_bytes_per_conn": (max(rss1, rss2) - rss0) / held,
        "idle_conns_held": held,
        "rss_base_kib": rss0 / 1024,
        "wakeups_idle": c1 - c0,
        "idle_cpu_ticks": (u1 - u0) + (s1 - s0),
        "errors": res["errors"],
    }


def active_run(name, tag, conns, period):
    """N clients that each echo a line every `period` s, idle in between: RSS per
    connection once every client has been served at least once."""
    srv = Server(name, tag)
    try:
        time.sleep(0.3)
        rss0 = rss_anon_bytes(srv.pid)
        rate = conns / period
        t0 = time.time()
        # echoc's clock starts at its launch: leave time for the handshakes (a server
        # that accepts slowly may need most of it).
        duration = period + 15
        client = start_echoc(echoc_cmd(srv.addr, conns, duration, rate=rate),
                             f"{tag}-{name}")
        held = srv.wait_for_most(conns, [client], timeout=duration - period - 2)
        # The rate queue is first-come first-served: after one period every client has
        # had its turn; one more second of margin.
        time.sleep(period + 1.0)
        if time.time() - t0 > duration - 0.5:
            raise RuntimeError(f"{name}: handshakes too slow, echoc stopped sending")
        held = max(held, fd_count(srv.pid) - srv.base_fds)
        rss1 = rss_anon_bytes(srv.pid)
        try:
            res = finish_echoc(client, timeout=duration + 30)
        except EchocHung as e:
            # The sample above is still good; only echoc's own verdict is lost.
            log(f"  warning: {name} active run: {e}")
            res = {"replies": 0, "errors": 0, "echoc_hung": 1}
    finally:
        srv.stop()
    return {
        "echoc_hung": res.get("echoc_hung", 0),
        "rss_active_bytes_per_conn": (rss1 - rss0) / held,
        "active_conns_held": held,
        "active_replies": res["replies"],
        "errors": res["errors"],
    }


def held_run(name, tag, total):
    """Two idle echoc processes and a ping-pong one, `total` connections together:
    are they all held, and is the ping-pong still served?"""
    pingpong = 50
    idle_each = (total - pingpong) // 2
    srv = Server(name, tag)
    samples = 3  # ping-pong runs of 3 s beside the idle clients; the median is reported
    try:
        hold = 30
        idle = [start_echoc(echoc_cmd(srv.addr, idle_each, hold, idle=True, share=2),
                            f"{tag}-{name}-idle{i}") for i in (1, 2)]
        ok = srv.wait_for_conns(2 * idle_each, idle, timeout=60)
        runs = []
        for k in range(samples):
            pp = start_echoc(echoc_cmd(srv.addr, pingpong, 3), f"{tag}-{name}-pp{k}")
            if k == 0:
                time.sleep(1.5)
                held = fd_count(srv.pid) - srv.base_fds  # sockets held during the ping-pong
            runs.append(finish_echoc(pp))
        idle_res = [finish_echoc(p) for p in idle]
        exited = 0 if srv.proc.poll() is None else 1
    finally:
        srv.stop()
    return {
        "held_connections": sum(r.get("connected_peak", r["connections"])
                                for r in idle_res) + runs[0].get("connected_peak", 0),
        "held_sockets": max(held, 0),
        "held_all_up": 1 if ok else 0,
        "held_server_exited": exited,
        "held_pingpong_replies_per_s": statistics.median(r["replies_per_s"] for r in runs),
        "errors": sum(r["errors"] for r in runs) + sum(r["errors"] for r in idle_res),
    }


# ---- the run ------------------------------------------------------------------------------

def main():
    os.makedirs(TMP, exist_ok=True)
    csv_path = os.environ.get("CSV", os.path.join(RESULTS, "latest.csv"))
    rows = []

    def record(rnd, workload, server, values):
        for metric, value in values.items():
            rows.append({"round": rnd, "workload": workload, "server": server,
                         "metric": metric, "value": f"{value:.6g}"})
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items()
                          if k in ("cpu_ns_per_reply", "replies_per_s", "p99_us",
                                   "syscalls_per_reply", "rss_idle_bytes_per_conn",
                                   "wakeups_idle", "rss_active_bytes_per_conn",
                                   "held_connections", "errors"))
        log(f"  [{rnd}] {workload:<14} {server:<6} {shown}")

    profile = perf_works()
    if not profile:
        log("perf record -e cpu-clock does not work here: no profiles, /proc split only")
    workloads = [("pipelined",
                  lambda s, t: load_run(s, t, 50, 64, DURATION, profile=profile))]
    # The same pipelined load, paced: every server sees the same arrival pattern, so the
    # lines per read (and so the per-reply CPU) no longer depend on how fast the server
    # answered the saturated load generator. PACED_RATE should be below every compared
    # server's capacity; a server that cannot reach it is saturated here too (its
    # replies/s shows it).
    workloads.append(("paced",
                      lambda s, t: load_run(s, t, 50, 64, DURATION, profile=profile,
                                            rate=PACED_RATE)))
    for n in PINGPONG_CONNS:
        workloads.append((f"pingpong-{n}",
                          lambda s, t, n=n: load_run(s, t, n, 1, DURATION)))
    workloads += [
        ("syscalls", lambda s, t: syscall_run(s, t, 100, SYSCALL_DURATION)),
        ("idle", lambda s, t: idle_run(s, t, IDLE_CONNS, WAKE_WINDOW)),
        ("active", lambda s, t: active_run(s, t, IDLE_CONNS, ACTIVE_PERIOD)),
    ]
    only = os.environ.get("WORKLOADS", "").split()
    if only:
        workloads = [w for w in workloads if w[0] in only]
    started = time.time()
    try:
        for rnd in range(1, ROUNDS + 1):
            log(f"round {rnd}/{ROUNDS} ({time.time() - started:.0f}s)")
            # Rotate who goes first: the first server of a workload runs right after the
            # previous workload's last one, and should not always be the same one.
            shift = (rnd - 1) % len(SERVERS)
            order = SERVERS[shift:] + SERVERS[:shift]
            for workload, fn in workloads:
                for server in order:
                    tag = f"r{rnd}-{workload}"
                    wait_for_tcp_teardown()
                    try:
                        record(rnd, workload, server, fn(server, tag))
                    except Exception as e:  # keep going: one failure is one row
                        log(f"  [{rnd}] {workload} {server}: FAILED: {e}")
                        record(rnd, workload, server, {"failed": 1})
                    kill_all()
        if HELD_CONNS and (not only or "held" in only):
            log(f"held connections ({time.time() - started:.0f}s)")
            # A warm-up run, not recorded: the first run that opens ~40,000 sockets on a
            # machine is 10-40 % low whichever server goes first (probably the kernel
            # growing its socket caches).
            wait_for_tcp_teardown()
            try:
                held_run(SERVERS[0], "held-warmup", HELD_CONNS)
            except Exception as e:
                log(f"  held warm-up: FAILED: {e}")
            kill_all()
            for server in SERVERS:
                wait_for_tcp_teardown()
                try:
                    record(1, "held", server, held_run(server, "held", HELD_CONNS))
                except Exception as e:
                    log(f"  held {server}: FAILED: {e}")
                    record(1, "held", server, {"failed": 1})
                kill_all()
    finally:
        kill_all()
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, ["round", "workload", "server", "metric", "value"])
            w.writeheader()
            w.writerows(rows)
        log(f"wrote {len(rows)} rows to {csv_path} in {time.time() - started:.0f}s")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    main()
