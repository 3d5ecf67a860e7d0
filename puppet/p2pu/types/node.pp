# The site.toml [node] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml.
type P2pu::Node = Struct[{
  Optional['name'] => String[1],
  Optional['role'] => Enum['node', 'proxy'],
}]
