"""The TUN driver: Linux TUN devices with virtio-net offloads and the event loop
that runs a sans-IO host core on them (DESIGN.md §1, §3).

- `tun.device.TunDevice`: one TUN queue (IFF_VNET_HDR + TUNSETOFFLOAD when granted).
- `tun.vnet`: the virtio_net_hdr codec (super-segments, partial checksums).
- `tun.loop.EventLoop`: the loop thread around the core; application threads wake it.
- `tun.netlink`, `tun.netns`: how a device was configured; opening it in a namespace.

This package imports the core's public types only through duck typing: the
core never imports it, and the facade (`stack.api`) joins the two.
"""
