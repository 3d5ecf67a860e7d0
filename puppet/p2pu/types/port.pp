# A TCP or UDP port.
type P2pu::Port = Integer[1, 65535]
