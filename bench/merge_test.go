package main

import (
	"slices"
	"testing"
)

// TestRoundOrder: over a full cycle of rounds (n, or 2n for odd n) every
// round is a permutation, every peer opens a round equally often, and every
// peer directly follows every other equally often — what a rotation
// (i+k)%n does not give (there each peer always follows the same one).
func TestRoundOrder(t *testing.T) {
	for n := 2; n <= 6; n++ {
		cycle := n
		if n%2 == 1 {
			cycle = 2 * n
		}
		first := make([]int, n)
		follows := map[[2]int]int{}
		for i := 0; i < cycle; i++ {
			o := roundOrder(i, n)
			s := slices.Clone(o)
			slices.Sort(s)
			for k := range s {
				if s[k] != k {
					t.Fatalf("n=%d round %d: %v is not a permutation", n, i, o)
				}
			}
			first[o[0]]++
			for k := 1; k < n; k++ {
				follows[[2]int{o[k-1], o[k]}]++
			}
		}
		for p, c := range first {
			if c != cycle/n {
				t.Errorf("n=%d: peer %d opens %d rounds of %d", n, p, c, cycle)
			}
		}
		want := cycle * (n - 1) / (n * (n - 1))
		for a := 0; a < n; a++ {
			for b := 0; b < n; b++ {
				if a != b && follows[[2]int{a, b}] != want {
					t.Errorf("n=%d: %d follows %d in %d rounds, want %d", n, b, a, follows[[2]int{a, b}], want)
				}
			}
		}
	}
}
