# site.toml [agent]
type P2pu::Agent = Struct[{
  Optional['spool_dir']        => P2pu::Path,
  Optional['state_dir']        => P2pu::Path,
  Optional['trusted_keys_dir'] => P2pu::Path,
  Optional['signing_key']      => P2pu::Path,
  Optional['archive_dir']      => P2pu::Path,
  Optional['accept_legacy']    => Boolean,
  Optional['tracker_port']     => P2pu::Port,
}]
