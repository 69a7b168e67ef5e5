/* punctum — subcommands. Each takes argv starting at the subcommand name and returns the
 * process exit code (0 ok, 1 runtime failure, 2 usage error; SPEC §4). */
#ifndef PUNCTUM_CLI_H
#define PUNCTUM_CLI_H

int pt_cmd_run(int argc, char **argv);
int pt_cmd_inspect(int argc, char **argv);
int pt_cmd_merge(int argc, char **argv);
int pt_cmd_tokenize(int argc, char **argv);

#endif
