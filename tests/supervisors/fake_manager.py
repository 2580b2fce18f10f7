"""The simplest process manager, for the test that registers an owner kind cascade-ops does not ship:
``fake_manager.py STATE NAME -- ARGV...`` runs ARGV as program NAME, runs it again when it dies
unasked, stops it on SIGUSR1 and starts it on SIGUSR2, and keeps its state in the JSON file STATE."""

import json
import os
import signal
import subprocess
import sys
import time

state_file, name, argv = sys.argv[1], sys.argv[2], sys.argv[4:]
asked = []  # signals not yet acted on, in order
signal.signal(signal.SIGUSR1, lambda *_: asked.append("stop"))
signal.signal(signal.SIGUSR2, lambda *_: asked.append("start"))
signal.signal(signal.SIGTERM, lambda *_: asked.append("exit"))
child = None
wanted = True
restarts = 0


def write():
    running = child is not None and child.poll() is None
    doc = {
        "name": name,
        "wanted": wanted,
        "state": "RUNNING" if running else "STOPPED",
        "main_pid": child.pid if running else 0,
        "restarts": restarts,
    }
    with open(state_file + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(state_file + ".tmp", state_file)  # a reader never sees half a file


def stop_child():
    global child
    if child is not None and child.poll() is None:
        child.send_signal(signal.SIGCONT)  # a stopped program cannot act on SIGTERM
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    child = None  # gone because it was asked to: the next start is no restart


while True:
    while asked:
        what = asked.pop(0)
        wanted = what == "start"
        write()  # "wanted: false" before the program goes: whoever asked may now wait for it
        if what != "start":
            stop_child()
        if what == "exit":
            write()
            sys.exit(0)
    if wanted and (child is None or child.poll() is not None):
        if child is not None:
            restarts += 1
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    write()
    time.sleep(0.05)  # a manager's own poll interval (SIGCHLD would do, at more length)
