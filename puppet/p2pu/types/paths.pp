# The site.toml [paths] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml.
type P2pu::Paths = Struct[{
  Optional['config_dir']    => P2pu::Path,
  Optional['systemd_dir']   => P2pu::Path,
  Optional['timesyncd_dir'] => P2pu::Path,
}]
