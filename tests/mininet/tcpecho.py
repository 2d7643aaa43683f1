"""TCP echo for scenario tests, run inside a VM's namespace.

    tcpecho.py server HOST PORT              echo every connection (prints "listening")
    tcpecho.py client HOST PORT SIZE TIMEOUT send SIZE bytes, read them back,
                                             print "ok SIZE" (exit 0) or why not (exit 1)
    tcpecho.py stream HOST PORT SECONDS      one connection, a byte echoed every 50 ms
                                             for SECONDS; print "ok N" (exit 0) or
                                             "stalled AT" (wall time of the first echo
                                             not back within 0.5 s, exit 1)
"""
import os
import socket
import sys
import threading


def serve(host, port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(16)
    print("listening", flush=True)

    def echo(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def client(host, port, size, timeout):
    payload = os.urandom(size)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            sender = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
            sender.start()
            got = bytearray()
            while len(got) < size:
                data = s.recv(65536)
                if not data:
                    break
                got += data
    except OSError as e:
        print(f"error {e}")
        return 1
    if bytes(got) != payload:
        print(f"short {len(got)}")
        return 1
    print(f"ok {size}")
    return 0


def stream(host, port, seconds):
    import time
    end = time.time() + seconds
    n = 0
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.settimeout(0.5)
            while time.time() < end:
                sent_at = time.time()
                s.sendall(b"x")
                try:
                    if s.recv(1) != b"x":
                        raise OSError("closed")
                except OSError:
                    print(f"stalled {sent_at:.3f}", flush=True)
                    return 1
                n += 1
                time.sleep(0.05)
    except OSError as e:
        print(f"error {e}", flush=True)
        return 1
    print(f"ok {n}", flush=True)
    return 0


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "server":
        serve(host, port)
    elif mode == "stream":
        sys.exit(stream(host, port, float(sys.argv[4])))
    else:
        sys.exit(client(host, port, int(sys.argv[4]), float(sys.argv[5])))
