"""Run a command in a pseudo-terminal for tests/chat_tty.rs (Python's standard library only).

Bytes on our stdin go to the terminal as typed keys (so \x03 is Ctrl-C, turned into SIGINT by
the terminal's line discipline); everything the command writes to the terminal is copied to our
stdout. When the command ends we print "[exit N]" (N = 128 + signal when it was killed).
"""
import os
import pty
import select
import sys

pid, fd = pty.fork()
if pid == 0:
    os.environ["LANG"] = "C.UTF-8"
    os.environ["LC_ALL"] = "C.UTF-8"
    os.execvp(sys.argv[1], sys.argv[1:])

out = sys.stdout.buffer
inputs = [0, fd]
while True:
    ready, _, _ = select.select(inputs, [], [])
    if 0 in ready:
        data = os.read(0, 4096)
        if data:
            os.write(fd, data)
        else:
            inputs.remove(0)
    if fd in ready:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the command closed the terminal (it has exited)
            data = b""
        if not data:
            break
        out.write(data)
        out.flush()

_, status = os.waitpid(pid, 0)
code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
out.write(b"\n[exit %d]\n" % code)
out.flush()
