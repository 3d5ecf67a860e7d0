# The site.toml [nat] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml.
type P2pu::Nat = Struct[{
  Optional['enabled']           => Boolean,
  Optional['proxy']             => String[1],
  Optional['port']              => P2pu::Port,
  Optional['keepalive_secs']    => Integer[5, 29],
  Optional['fleet_secret_file'] => P2pu::Path,
  Optional['stun_server']       => String[1],
  Optional['control_socket']    => P2pu::Path,
  Optional['peer_expiry_secs']  => Integer[10, 4294967295],
  Optional['relay_rate_kbps']   => Integer[1, 4294967295],
  Optional['identity_key_file'] => P2pu::Path,
  Optional['proxy_state_dir']   => P2pu::Path,
}]
