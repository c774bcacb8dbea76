package scenarios

import (
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
)

func mapFor(root string) vhd.PathMap {
	return vhd.PathMap{{Windows: storetest.WindowsRoot, Local: root}}
}
