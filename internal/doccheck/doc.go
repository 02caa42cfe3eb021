// Package doccheck lets tests hold the documentation's examples to the
// code: it reads the fenced code blocks of a Markdown file, finds the
// command lines of a program in them, and checks a command line against
// the program's cobra command tree (the command exists, its flags exist
// and parse, its arguments are as many as it takes). Configuration
// examples are checked by each program's own loader in the tests that
// call this package; a block's info string (```yaml unit) says which.
package doccheck
