# site.toml [time]
type P2pu::Time = Struct[{
  Optional['ntp']          => Array[String[1]],
  Optional['fallback_ntp'] => Array[String[1]],
}]
