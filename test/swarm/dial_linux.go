package swarm

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): a socket
// bound to a source address with port 0 gets its port at connect, where
// any port whose 4-tuple is free may be used, including ports held by
// TIME_WAIT connections to another destination. Without it, bind picks a
// port no socket of that address holds: after a run of 10,000 hosts, the
// next run's connects fail by the thousand for a minute.
const ipBindAddressNoPort = 24

// sourceControl is the Control function of a dialer with a LocalAddr.
func sourceControl(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
