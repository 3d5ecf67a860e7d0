# The site.toml [transmission] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml. rpc_password may be Sensitive
# (then the whole site.toml is).
type P2pu::Transmission = Struct[{
  Optional['rpc_port']          => P2pu::Port,
  Optional['rpc_user']          => String[1],
  Optional['rpc_password']      => Variant[String[1], Sensitive[String[1]]],
  Optional['rpc_password_file'] => P2pu::Path,
  Optional['peer_port']         => P2pu::Port,
  Optional['download_dir']      => P2pu::Path,
  Optional['dht']               => Boolean,
  Optional['lpd']               => Boolean,
  Optional['pex']               => Boolean,
  Optional['utp']               => Boolean,
  Optional['encryption']        => Enum['prefer-clear', 'prefer-encrypted', 'required'],
  Optional['settings_file']     => P2pu::Path,
  Optional['user']              => String[1],
  Optional['extra']             => Hash[String[1], Variant[String, Integer, Float, Boolean, Array]],
}]
