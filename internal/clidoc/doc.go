// Package clidoc gives a urfave/cli program what users expect beyond --help:
// --version with the commit and build date, shell completion for bash, zsh
// and fish ("PROGRAM completion SHELL"), and a man page (the hidden
// "PROGRAM man"), all drawn from the same cli.App as --help, so that none of
// them can drift from the flags and commands the program really has.
//
// Completion is answered by the program itself. The bash and zsh scripts
// are small: on each TAB they run the program with the words typed so far
// and urfave/cli's hidden --generate-bash-completion flag, and the program
// prints the commands or flags that fit (Complete). A new command or flag
// therefore completes without regenerating any script. The scripts never
// pass "--" or an eval'd line to the program: after "--" urfave/cli stops
// treating --generate-bash-completion as the completion request and the
// program would run for real, so there the scripts complete file names
// instead. fish gets urfave/cli's own static script (App.ToFishCompletion),
// which fish reads with each flag's description.
//
// The man page is urfave/cli's App.ToManWithSection: the Makefile runs the
// built program ("tunnel man") to write it into the packages, so it is never
// edited by hand.
package clidoc
