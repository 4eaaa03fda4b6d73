"""The host's own addresses, on every interface, for ``netpolicy.check_address``.

A service bound to 0.0.0.0 answers on each of them, including a public one on eth0 that the
address ranges alone would call fine; an agent must not reach the host that way (by the
address or by a name that resolves to it). Read from the C library's ``getifaddrs``, which
lists every address of every interface (secondary ones too), at each call: addresses come and
go (DHCP, VPNs), so a list kept from start-up could go stale. Standard library only (ctypes).

    >>> ipaddress.ip_address("127.0.0.1") in host_addresses()
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import socket
import sys

from .netpolicy import IPAddress


class _Sockaddr(ctypes.Structure):
    # Linux: a 16-bit family; the BSDs and macOS: a length byte, then an 8-bit family
    _fields_ = (
        [("sa_family", ctypes.c_ushort)]
        if sys.platform.startswith("linux")
        else [("sa_len", ctypes.c_ubyte), ("sa_family", ctypes.c_ubyte)]
    )


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_Ifaddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.POINTER(_Sockaddr)),
    ("ifa_netmask", ctypes.POINTER(_Sockaddr)),
    ("ifa_ifu", ctypes.c_void_p),
    ("ifa_data", ctypes.c_void_p),
]

# where the address sits in sockaddr_in (after family and port) and sockaddr_in6 (and flowinfo)
_LAYOUT = {socket.AF_INET: (4, 4), socket.AF_INET6: (8, 16)}
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.getifaddrs.argtypes = [ctypes.POINTER(ctypes.POINTER(_Ifaddrs))]
_libc.getifaddrs.restype = ctypes.c_int
_libc.freeifaddrs.argtypes = [ctypes.POINTER(_Ifaddrs)]
_libc.freeifaddrs.restype = None


def host_addresses() -> frozenset[IPAddress]:
    """Every IPv4 and IPv6 address assigned to any of this host's interfaces, up or down.
    ``OSError`` if the kernel will not say (then nothing could be checked: refuse the fetch)."""
    head = ctypes.POINTER(_Ifaddrs)()
    if _libc.getifaddrs(ctypes.byref(head)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot list this host's addresses (getifaddrs): {os.strerror(code)}")
    found: set[IPAddress] = set()
    try:
        entry = head
        while entry:
            sockaddr = entry.contents.ifa_addr
            layout = _LAYOUT.get(sockaddr.contents.sa_family) if sockaddr else None
            if layout is not None:
                offset, size = layout
                raw = ctypes.string_at(ctypes.addressof(sockaddr.contents) + offset, size)
                found.add(ipaddress.ip_address(raw))
            entry = entry.contents.ifa_next
    finally:
        _libc.freeifaddrs(head)
    return frozenset(found)
