"""The Python tutorials' server: socketserver.ThreadingTCPServer echoing what it reads.
Usage: python3 threading_echo.py   (prints "listening on tcp://127.0.0.1:PORT")"""
import socketserver


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


with Server(("127.0.0.1", 0), Echo) as server:
    print(f"listening on tcp://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
