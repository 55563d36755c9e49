# expect: error: forbidden import 'socket'
import socket


def route(queue, replicas, now, knobs):
    socket.create_connection(("example.com", 80)).sendall(b"GET / HTTP/1.0\r\n\r\n")
    return []
