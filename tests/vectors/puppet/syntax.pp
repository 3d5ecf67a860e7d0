notify { 'a': }
file { '/tmp/never': ensure => }
