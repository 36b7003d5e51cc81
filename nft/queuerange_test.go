package nft

import (
	"strings"
	"testing"
)

// A queue range spreads control flows over QueueTotal queues by the
// kernel's flow hash: queues_total in the xtables target, no cpu-fanout
// flag (fanout would split a flow's two directions over queues). The fake
// and the kernel agree, and nft reads the rule back as a range.
func TestQueueRange(t *testing.T) {
	t.Parallel()
	spec := testSpec(QueueCompat)
	spec.QueueTotal = 2
	const want = "xt NFQUEUE queue flags bypass to 7-8"

	f := NewFake()
	if err := f.Apply(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	fake, err := f.Dump(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(fake, want); n != 4 {
		t.Errorf("fake: %d queue rules print %q, want 4:\n%s", n, want, fake)
	}
	if strings.Contains(fake, "fanout") {
		t.Errorf("fake: a queue rule uses cpu fanout:\n%s", fake)
	}

	t.Run("kernel", func(t *testing.T) {
		ns := newNetns(t)
		ctx := ctxT(t)
		k := newKernel(t, ns)
		if err := k.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
		got, err := k.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != fake {
			t.Errorf("kernel and fake differ:\nkernel:\n%s\nfake:\n%s", got, fake)
		}
		requireTool(t, "nft", "nftables")
		stdout, _ := ns.runSplit(t, "nft", "list", "table", "inet", DefaultTable)
		if n := strings.Count(stdout, "queue num 7-8 bypass"); n != 4 {
			t.Errorf("nft lists %d rules with \"queue num 7-8 bypass\", want 4:\n%s", n, stdout)
		}
	})
}
