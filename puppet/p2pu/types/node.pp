# site.toml [node]
type P2pu::Node = Struct[{
  Optional['name'] => String[1],
  Optional['role'] => Enum['node', 'proxy'],
}]
