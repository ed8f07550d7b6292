// Command versioned prints main.version; the harness's build tests use it
// to check BuildMain's -ldflags without building the whole agent.
package main

import "fmt"

var version = "none"

func main() { fmt.Println(version) }
