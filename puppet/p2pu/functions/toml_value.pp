# A TOML value from a Puppet string, number, boolean, array or hash (an inline table).
function p2pu::toml_value(Variant[String, Integer, Float, Boolean, Array, Hash] $value) >> String {
  case $value {
    String:                  { p2pu::toml_string($value) }
    # %p is Ruby's to_s for floats (1.5, 2.0, 1.0e-07): all valid TOML; plain String() rounds.
    Integer, Float, Boolean: { String($value, '%p') }
    Array:                   { "[${value.map |$v| { p2pu::toml_value($v) }.join(', ')}]" }
    Hash:                    {
      $pairs = $value.keys.sort.map |$k| { "${p2pu::toml_key($k)} = ${p2pu::toml_value($value[$k])}" }
      "{ ${pairs.join(', ')} }"
    }
    default:                 { fail("p2pu: no TOML for ${String($value, '%p')}") }
  }
}
