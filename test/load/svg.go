package load

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Point is one data point of a Series.
type Point struct{ X, Y float64 }

// Series is one line of a Chart.
type Series struct {
	Name   string
	Points []Point
	// Color is an SVG colour; empty picks the next of a fixed palette.
	Color string
	// Dash draws the line dashed (e.g. a second percentile of the same
	// path, in the same colour).
	Dash string
}

// Chart is a line chart with a legend, drawn by SVG as a standalone SVG
// document: no plotting library, the elements are written from the data.
type Chart struct {
	Title string
	// Caption is a small line under the title (the command that made it,
	// the machine).
	Caption        string
	XLabel, YLabel string
	// LogX and LogY use a base-10 logarithmic axis; every value on it must
	// be positive.
	LogX, LogY bool
	Series     []Series
	// Width and Height in pixels; 760×440 when zero.
	Width, Height int
}

// palette is colour-blind friendly (Okabe-Ito).
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}

// layout of the plot area inside the picture.
const (
	marginLeft   = 78
	marginRight  = 190 // the legend
	marginTop    = 58
	marginBottom = 56
)

// axis maps data values to pixels along one dimension.
type axis struct {
	log      bool
	min, max float64 // data range after rounding to ticks (log: exponents)
	ticks    []float64
	from, to float64 // pixels
}

func (a axis) pos(v float64) float64 {
	if a.log {
		v = math.Log10(v)
	}
	if a.max == a.min {
		return (a.from + a.to) / 2
	}
	return a.from + (v-a.min)/(a.max-a.min)*(a.to-a.from)
}

// newAxis chooses ticks for values: powers of ten on a log axis, a
// 1-2-5 step from zero (or below zero) on a linear one.
func newAxis(values []float64, log bool, from, to float64) (axis, error) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return axis{}, fmt.Errorf("value %v cannot be drawn", v)
		}
		if log && v <= 0 {
			return axis{}, fmt.Errorf("value %v on a logarithmic axis", v)
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	a := axis{log: log, from: from, to: to}
	if log {
		a.min, a.max = math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
		if a.max == a.min {
			a.max++
		}
		for e := a.min; e <= a.max; e++ {
			a.ticks = append(a.ticks, math.Pow(10, e))
		}
		return a, nil
	}
	lo = min(lo, 0)
	if hi <= lo {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / 5)
	a.min, a.max = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	for v := a.min; v <= a.max+step/2; v += step {
		a.ticks = append(a.ticks, v)
	}
	return a, nil
}

// niceStep rounds raw up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// formatNumber prints v briefly: thousands separated by commas, at most
// three significant decimals below 10.
func formatNumber(v float64) string {
	if v != 0 && math.Abs(v) < 10 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// SVG draws the chart. It fails when there is nothing to draw or a value
// cannot be placed (NaN, infinite, not positive on a logarithmic axis).
func (c Chart) SVG() ([]byte, error) {
	w, h := c.Width, c.Height
	if w == 0 {
		w = 760
	}
	if h == 0 {
		h = 440
	}
	var xs, ys []float64
	for _, s := range c.Series {
		for _, p := range s.Points {
			xs, ys = append(xs, p.X), append(ys, p.Y)
		}
	}
	if len(xs) == 0 {
		return nil, errors.New("chart has no points")
	}
	left, right := float64(marginLeft), float64(w-marginRight)
	top, bottom := float64(marginTop), float64(h-marginBottom)
	ax, err := newAxis(xs, c.LogX, left, right)
	if err != nil {
		return nil, fmt.Errorf("x axis: %w", err)
	}
	ay, err := newAxis(ys, c.LogY, bottom, top)
	if err != nil {
		return nil, fmt.Errorf("y axis: %w", err)
	}

	var b bytes.Buffer
	esc := func(s string) string {
		var e bytes.Buffer
		_ = xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">
`, w, h, w, h)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc(c.Title))
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginLeft, esc(c.Title))
	if c.Caption != "" {
		fmt.Fprintf(&b, `<text x="%d" y="40" font-size="11" fill="#555555">%s</text>`+"\n", marginLeft, esc(c.Caption))
	}
	// Grid and tick labels.
	b.WriteString(`<g stroke="#e0e0e0" stroke-width="1">` + "\n")
	for _, t := range ax.ticks {
		x := ax.pos(t)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s"/>`+"\n", f(x), f(top), f(x), f(bottom))
	}
	for _, t := range ay.ticks {
		y := ay.pos(t)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s"/>`+"\n", f(left), f(y), f(right), f(y))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="none" stroke="#333333"/>`+"\n",
		f(left), f(top), f(right-left), f(bottom-top))
	b.WriteString(`<g fill="#333333">` + "\n")
	for _, t := range ax.ticks {
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle">%s</text>`+"\n", f(ax.pos(t)), f(bottom+16), esc(formatNumber(t)))
	}
	for _, t := range ay.ticks {
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="end">%s</text>`+"\n", f(left-6), f(ay.pos(t)+4), esc(formatNumber(t)))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<text x="%s" y="%d" text-anchor="middle">%s</text>`+"\n", f((left+right)/2), h-14, esc(c.XLabel))
	fmt.Fprintf(&b, `<text transform="translate(18 %s) rotate(-90)" text-anchor="middle">%s</text>`+"\n", f((top+bottom)/2), esc(c.YLabel))
	// Lines, markers and the legend.
	for i, s := range c.Series {
		color := s.Color
		if color == "" {
			color = palette[i%len(palette)]
		}
		dash := ""
		if s.Dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, esc(s.Dash))
		}
		pts := make([]string, len(s.Points))
		for j, p := range s.Points {
			pts[j] = f(ax.pos(p.X)) + "," + f(ay.pos(p.Y))
		}
		fmt.Fprintf(&b, `<g><title>%s</title>`+"\n", esc(s.Name))
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), esc(color), dash)
		for _, p := range s.Points {
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"><title>%s: %s, %s</title></circle>`+"\n",
				f(ax.pos(p.X)), f(ay.pos(p.Y)), esc(color), esc(s.Name), esc(formatNumber(p.X)), esc(formatNumber(p.Y)))
		}
		ly := top + 8 + float64(i)*20
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2"%s/>`+"\n",
			f(right+12), f(ly), f(right+40), f(ly), esc(color), dash)
		fmt.Fprintf(&b, `<text x="%s" y="%s">%s</text>`+"\n", f(right+46), f(ly+4), esc(s.Name))
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.Bytes(), nil
}
