# site.toml [puppet]
type P2pu::Puppet = Struct[{
  Optional['modulepath']   => Array[P2pu::Path],
  Optional['apply_flags']  => Array[String[1]],
  Optional['state_root']   => P2pu::Path,
  Optional['timeout_secs'] => Integer[1],
}]
