# The site.toml [transfer] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml.
type P2pu::Transfer = Struct[{
  Optional['mode']    => Enum['chain', 'stripes'],
  Optional['stripes'] => Integer[1, 64],
  Optional['fan_out'] => Integer[2, 32],
}]
