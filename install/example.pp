# The example update `p2pu lab` (and the README) sends: it leaves a file in Puppet's own
# state directory, so trying it changes nothing else on the machine.
file { "${settings::vardir}/p2pu-example.txt":
  ensure  => file,
  content => "applied by p2pu\n",
}
notify { 'p2pu example update applied': }
