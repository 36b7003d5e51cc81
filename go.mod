module github.com/ftpsalg/ftpsalg

go 1.26.0
