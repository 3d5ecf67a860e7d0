# site.toml [paths]
type P2pu::Paths = Struct[{
  Optional['config_dir']    => P2pu::Path,
  Optional['systemd_dir']   => P2pu::Path,
  Optional['timesyncd_dir'] => P2pu::Path,
}]
