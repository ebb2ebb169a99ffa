"""The rig's way to the internet, which has one page on it: the controller's IAM policy document.

The plugin downloads the pinned document from its upstream URL (https, one
host). The rig has no internet, so its environment names this process as
HTTPS_PROXY, as a company proxy is named, and SSL_CERT_FILE names the rig's
CA, as a company's TLS-inspecting proxy's CA is named:

- `CONNECT <host>:443` is answered only for the host of the pinned URL; the
  tunnel ends here, in TLS with a certificate for that host signed by the
  rig's CA, and `GET <the pinned path>` answers the document, byte for byte
  the upstream one (rig/tools.py fetched it and checked its sha256 against
  the plugin's pin). Any other path is 404, as the host answers it.
- Any other host, and any request that is not CONNECT, is refused (403):
  nothing in the rig leaves the machine through here.

Each request is logged to stdout (the rig's log of this process).

usage: policy_mirror.py PORT CERT KEY DOCUMENT URL
"""

import socket
import ssl
import sys
import threading
from urllib.parse import urlsplit


def read_request(stream):
    """(method, target) of the request line, its headers read up to the blank line; None when the
    client closed first."""
    lines = []
    while True:
        line = stream.readline(65536)
        line = line.decode("latin-1").rstrip("\r\n") if line else ""
        if not line:
            break
        lines.append(line)
    if not lines:
        return None
    method, _, rest = lines[0].partition(" ")
    return method, rest.split(" ")[0]


def answer(stream, status, body, content_type="text/plain; charset=utf-8"):
    stream.write(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    stream.flush()


def serve(conn, tls, host, path, document):
    with conn:
        reader = conn.makefile("rwb")
        request = read_request(reader)
        if request is None:
            return
        method, target = request
        print(f"{method} {target}", flush=True)
        if method != "CONNECT" or target != f"{host}:443":
            answer(reader, "403 Forbidden", f"the rig's proxy reaches only {host}:443\n".encode())
            return
        reader.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        reader.flush()
        with tls.wrap_socket(conn, server_side=True) as inner:
            stream = inner.makefile("rwb")
            request = read_request(stream)
            if request is None:
                return
            method, wanted = request
            print(f"  {method} https://{host}{wanted}", flush=True)
            if method == "GET" and wanted == path:
                answer(stream, "200 OK", document)
            else:
                answer(stream, "404 Not Found", b"404: Not Found")


def main():
    port, cert, key, document_path, url = sys.argv[1:6]
    parts = urlsplit(url)
    document = open(document_path, "rb").read()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", int(port)))
    print(f"policy-mirror: {parts.hostname}{parts.path} on 127.0.0.1:{port}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=lambda c=conn: _safely(serve, c, tls, parts.hostname, parts.path, document),
                         daemon=True).start()


def _safely(f, *args):
    try:
        f(*args)
    except (OSError, ssl.SSLError) as e:
        print(f"  connection ended: {e}", flush=True)


if __name__ == "__main__":
    main()
