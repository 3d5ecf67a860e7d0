# The site.toml [serf] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml.
type P2pu::Serf = Struct[{
  Optional['bind']                  => String[1],
  Optional['advertise']             => String[1],
  Optional['join']                  => Array[String[1]],
  Optional['encrypt']               => Boolean,
  Optional['keyring_file']          => P2pu::Path,
  Optional['rpc_addr']              => String[1],
  Optional['rpc_auth_file']         => P2pu::Path,
  Optional['tags']                  => Hash[String[1], String],
  Optional['event_handler']         => P2pu::Path,
  Optional['config_file']           => P2pu::Path,
  Optional['user_event_size_limit'] => Integer[512, 9216],
}]
