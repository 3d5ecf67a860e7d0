# site.toml [nat]
type P2pu::Nat = Struct[{
  Optional['enabled']           => Boolean,
  Optional['proxy']             => String[1],
  Optional['port']              => P2pu::Port,
  Optional['keepalive_secs']    => Integer[5, 29],
  Optional['fleet_secret_file'] => P2pu::Path,
}]
