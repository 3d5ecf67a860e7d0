# The site.toml [time] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml.
type P2pu::Time = Struct[{
  Optional['ntp']          => Array[String[1]],
  Optional['fallback_ntp'] => Array[String[1]],
}]
