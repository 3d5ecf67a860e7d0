# The site.toml [puppet] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml.
type P2pu::Puppet = Struct[{
  Optional['modulepath']   => Array[P2pu::Path],
  Optional['apply_flags']  => Array[String[1]],
  Optional['state_root']   => P2pu::Path,
  Optional['timeout_secs'] => Integer[1],
}]
