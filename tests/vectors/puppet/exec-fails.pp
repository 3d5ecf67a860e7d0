exec { 'fail': command => '/bin/false' }
