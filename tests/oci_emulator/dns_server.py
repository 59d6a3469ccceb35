"""A tiny authoritative DNS server on 127.0.0.1 (UDP) whose records a test changes at will."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode
import dns.rrset


class DnsServer:
    """Answers A and SRV queries from `records` {(name, type): [rdata, ...]}; NXDOMAIN otherwise."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    def set(self, name: str, rtype: str, *rdatas: str) -> None:
        self.records[(name.rstrip(".").lower(), rtype)] = list(rdatas)

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self.queries += 1
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            rtype = dns.rdatatype.to_text(question.rdtype)
            values = self.records.get((name, rtype))
            if values:
                reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", rtype, *values))
            elif not any(n == name for n, _ in self.records):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)
