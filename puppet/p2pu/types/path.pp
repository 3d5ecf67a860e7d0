# An absolute path on the node.
type P2pu::Path = Pattern[/\A\//]
